/**
 * The `generations` table: the truth about every picture a user asked for.
 * Fibers of the generation engine are caches of these rows; a new leader
 * resumes from them. This service is the table's only door; its SQL lives in
 * `sql/`, one file per operation (`create`, `find`, `queue`, `mark`,
 * `setMessage`, `poll`, `list`, `count`, `retention`, and the DDL in `migrate`), the row
 * schema in `sql/row.ts`.
 *
 * Life of a row:
 *
 *   queued ──▶ submitting ──▶ submitted ──▶ succeeded ──▶ delivered
 *     │            │              │              │
 *     └────────────┴──────────────┴──────────────┴──▶ failed (user told: notified_at)
 *
 * - `queued`: recorded by the chat flow; nothing sent to Kie yet.
 * - `submitting`: the createTask request is about to be or has been sent
 *   (`submit_ref` identifies it for Kie's callback). A row left here by a dead
 *   leader may or may not have a Kie task: it is never blindly resubmitted.
 * - `submitted`: `kie_task_id` stored in the same statement; resumed by
 *   polling that id, never by a second createTask.
 * - `succeeded`: result URLs stored; delivery pending. `photo_message_id`
 *   (the result message) and `document_message_id` (the original) are
 *   recorded the moment Telegram accepts each, so a resumed delivery never
 *   sends them again.
 * - `delivered` / `failed`: terminal. A failed row carries a machine
 *   `fail_code`, an operator `fail_message` and the `fail_reason` its user is
 *   told (in their language); `notified_at` once they were told.
 *
 * Each arrow is one guarded `UPDATE` that reports whether it applied; the
 * table of them (from, to, what else is written) heads `sql/mark.ts`.
 *
 * `status_message_id` is the chat's "⏳ Генерирую..." message while it shows
 * progress; the engine clears it once that message became the failure notice
 * or was removed, so a finished row that still has one needs cleaning up.
 *
 * Fair order: a user's n-th waiting generation, counting the ones already at
 * Kie, is in round n; rounds go in turn, oldest first within a round. So
 * nobody gets a second picture sent while someone else waits for a first.
 *
 * Every timestamp written here comes from the Effect `Clock` (UTC), so the
 * engine's deadlines follow a TestClock in tests.
 */
import { Context, type DateTime, type Duration, Effect, Layer, type Option } from "effect"
import { SqlClient } from "effect/sql/SqlClient"
import type { SqlError } from "effect/sql/SqlError"
import { counts, countSince, type GenerationCounts, inFlight, sentSince } from "./sql/count.ts"
import { create, type GenerationLimitReached, type Limits, type NewGeneration } from "./sql/create.ts"
import { find, findByResultMessage, findByTaskId } from "./sql/find.ts"
import { failedUnnotified, openStatusMessages, overdue, statusesToRefresh, withStatus } from "./sql/list.ts"
import * as Mark from "./sql/mark.ts"
import { dueForPolling, nextPollAt, schedulePoll } from "./sql/poll.ts"
import { nextQueued, type QueuePosition, queuePositions } from "./sql/queue.ts"
import type { Generation, GenerationStatus } from "./sql/row.ts"
import { purgeFinished } from "./sql/retention.ts"
import * as SetMessage from "./sql/setMessage.ts"

export type { GenerationCounts } from "./sql/count.ts"
export { CHANNEL, GenerationLimitReached, type Limits, type NewGeneration } from "./sql/create.ts"
export {
  migration,
  migrationCreatedAt,
  migrationEdits,
  migrationEngine,
  migrationRetries,
  migrationSentAt,
  migrationThreads
} from "./sql/migrate.ts"
export type { QueuePosition } from "./sql/queue.ts"
export { type Generation, type GenerationStatus, STATUSES, UNFINISHED_STATUSES } from "./sql/row.ts"

/** What the chat flow and the engine may do with generations. */
export interface GenerationsShape {
  /** Records a generation (or finds the one `sourceUpdateId` already made) and wakes the engine. */
  readonly create: (
    input: NewGeneration,
    limits: Limits
  ) => Effect.Effect<{ readonly generation: Generation; readonly created: boolean }, GenerationLimitReached | SqlError>
  /** The generation `id`, if it exists. */
  readonly find: (id: string) => Effect.Effect<Option.Option<Generation>, SqlError>
  /** The generation Kie knows as `taskId`, if any. */
  readonly findByTaskId: (taskId: string) => Effect.Effect<Option.Option<Generation>, SqlError>
  /** The generation whose delivered picture (or original) is message `messageId` in `chatId`. */
  readonly findByResultMessage: (
    chatId: number,
    messageId: number
  ) => Effect.Effect<Option.Option<Generation>, SqlError>
  /**
   * A later photo of album `mediaGroupId` joins the user's edit it started
   * (queued, not uploaded yet), up to `max` pictures.
   */
  readonly joinAlbum: (
    userId: number,
    mediaGroupId: string,
    fileId: string,
    max: number
  ) => Effect.Effect<"joined" | "full" | "none", SqlError>
  /** An edit's pictures were uploaded to `urls` (once; false if already set or no longer queued). */
  readonly setInputUrls: (id: string, urls: ReadonlyArray<string>) => Effect.Effect<boolean, SqlError>
  /** Records the chat's status message and the text it shows. */
  readonly setStatusMessage: (id: string, messageId: number, text: string) => Effect.Effect<void, SqlError>
  /** Records the text last shown in the status message. */
  readonly setStatusText: (id: string, text: string) => Effect.Effect<void, SqlError>
  /**
   * Queued generations in the order they will be submitted: oldest first, one
   * per user at a time (a user's generations already at Kie count as turns taken).
   */
  readonly nextQueued: (
    limit: number,
    excluding: ReadonlyArray<string>
  ) => Effect.Effect<ReadonlyArray<Generation>, SqlError>
  /** Every queued generation's place in that order (1 = next). */
  readonly queuePositions: Effect.Effect<ReadonlyArray<QueuePosition>, SqlError>
  /**
   * queued → submitting, just before createTask is sent (again, for a retry
   * of the same call); `submitted_at` is when it was last sent. False if the
   * row moved on meanwhile.
   */
  readonly markSubmitting: (id: string, ref: string) => Effect.Effect<boolean, SqlError>
  /** submitting → submitted with the task id, in one statement. */
  readonly markSubmitted: (id: string, taskId: string, firstPollAt: DateTime.Utc) => Effect.Effect<boolean, SqlError>
  /** Back to queued: createTask proved that nothing was created (e.g. Kie said 429 or 5xx). */
  readonly requeue: (id: string) => Effect.Effect<boolean, SqlError>
  /** submitted → succeeded with the result URLs; polling stops. */
  readonly markSucceeded: (id: string, resultUrls: ReadonlyArray<string>) => Effect.Effect<boolean, SqlError>
  /** Records the message that carries the result (photo, or document when too large). */
  readonly setPhotoMessage: (id: string, messageId: number) => Effect.Effect<void, SqlError>
  /** Records the message with the uncompressed original. */
  readonly setDocumentMessage: (id: string, messageId: number) => Effect.Effect<void, SqlError>
  /** succeeded → delivered. */
  readonly markDelivered: (id: string) => Effect.Effect<boolean, SqlError>
  /**
   * Any non-terminal status → failed, with a machine `code`, an operator
   * `message` and the `reason` the user will be told (in their language).
   */
  readonly markFailed: (id: string, code: string, message: string, reason?: string) => Effect.Effect<boolean, SqlError>
  /**
   * The user was told about the failure. `consumedStatusMessage`: the status
   * message that now shows the failure, no longer a progress message.
   */
  readonly markNotified: (id: string, consumedStatusMessage?: number) => Effect.Effect<void, SqlError>
  /** Records that failed generation `id` was retried as `retryId`; false if it was retried by another already. */
  readonly markRetried: (id: string, retryId: string) => Effect.Effect<boolean, SqlError>
  /** The status message `messageId` was finalized (deleted or replaced); forget it. */
  readonly clearStatusMessage: (id: string, messageId: number) => Effect.Effect<void, SqlError>
  /** When to ask Kie about a `submitted` generation next (no-op once it moved on). */
  readonly schedulePoll: (id: string, at: DateTime.Utc) => Effect.Effect<void, SqlError>
  /** `submitted` generations whose next poll is due, soonest first. */
  readonly dueForPolling: (
    limit: number,
    excluding?: ReadonlyArray<string>
  ) => Effect.Effect<ReadonlyArray<Generation>, SqlError>
  /** When the next poll of a `submitted` generation (other than `excluding`) is due. */
  readonly nextPollAt: (excluding: ReadonlyArray<string>) => Effect.Effect<Option.Option<DateTime.Utc>, SqlError>
  /** Generations in `status`, oldest first. */
  readonly withStatus: (status: GenerationStatus, limit: number) => Effect.Effect<ReadonlyArray<Generation>, SqlError>
  /** Failed generations whose user was not told yet. */
  readonly failedUnnotified: (limit: number) => Effect.Effect<ReadonlyArray<Generation>, SqlError>
  /**
   * Non-terminal generations whose deadline has passed; `succeeded` ones only
   * once `succeededGrace` more has passed (their picture exists and is paid for).
   */
  readonly overdue: (
    limit: number,
    succeededGrace?: Duration.Duration
  ) => Effect.Effect<ReadonlyArray<Generation>, SqlError>
  /** Finished generations whose status message still shows progress (delivered, or failed and told). */
  readonly openStatusMessages: (limit: number) => Effect.Effect<ReadonlyArray<Generation>, SqlError>
  /** Unfinished generations with a status message last edited at or before `editedBefore`, least recently edited first. */
  readonly statusesToRefresh: (
    editedBefore: DateTime.Utc,
    limit: number
  ) => Effect.Effect<ReadonlyArray<Generation>, SqlError>
  /** Generations a user is waiting for: not yet delivered or failed. */
  readonly inFlight: Effect.Effect<number, SqlError>
  /** Unfinished generations by status. */
  readonly counts: Effect.Effect<GenerationCounts, SqlError>
  /** When createTask requests were last sent, for those sent after `since` (by any instance). */
  readonly sentSince: (since: DateTime.Utc) => Effect.Effect<ReadonlyArray<DateTime.Utc>, SqlError>
  /**
   * Generations created at or after `since` that did not fail: with `since` =
   * 00:00 UTC today, what the global daily budget has used.
   */
  readonly countSince: (since: DateTime.Utc) => Effect.Effect<number, SqlError>
  /**
   * Retention: deletes up to `limit` finished (delivered or failed)
   * generations created before `before`, oldest first; returns how many.
   * Unfinished ones are never deleted.
   */
  readonly purgeFinished: (before: DateTime.Utc, limit: number) => Effect.Effect<number, SqlError>
}

const make = Effect.gen(function*() {
  const sql = yield* SqlClient
  return Generations.of({
    create: Effect.fn("Generations.create")(function*(input: NewGeneration, limits: Limits) {
      const result = yield* create(sql, input, limits)
      // Ties the update's trace to the engine's spans, which carry the same id.
      yield* Effect.annotateCurrentSpan("generation_id", result.generation.id)
      return result
    }),
    find: (id) => find(sql, id),
    findByTaskId: (taskId) => findByTaskId(sql, taskId),
    findByResultMessage: (chatId, messageId) => findByResultMessage(sql, chatId, messageId),
    setInputUrls: (id, urls) => Mark.setInputUrls(sql, id, urls),
    joinAlbum: (userId, mediaGroupId, fileId, max) => Mark.joinAlbum(sql, userId, mediaGroupId, fileId, max),
    setStatusMessage: (id, messageId, text) => SetMessage.setStatusMessage(sql, id, messageId, text),
    setStatusText: (id, text) => SetMessage.setStatusText(sql, id, text),
    nextQueued: (limit, excluding) => nextQueued(sql, limit, excluding),
    queuePositions: queuePositions(sql),
    markSubmitting: Effect.fn("Generations.markSubmitting")(function*(id: string, ref: string) {
      return yield* Mark.markSubmitting(sql, id, ref)
    }),
    markSubmitted: (id, taskId, firstPollAt) => Mark.markSubmitted(sql, id, taskId, firstPollAt),
    requeue: (id) => Mark.requeue(sql, id),
    markSucceeded: (id, resultUrls) => Mark.markSucceeded(sql, id, resultUrls),
    setPhotoMessage: (id, messageId) => SetMessage.setPhotoMessage(sql, id, messageId),
    setDocumentMessage: (id, messageId) => SetMessage.setDocumentMessage(sql, id, messageId),
    markDelivered: Effect.fn("Generations.markDelivered")(function*(id: string) {
      return yield* Mark.markDelivered(sql, id)
    }),
    markFailed: Effect.fn("Generations.markFailed")(
      function*(id: string, code: string, message: string, reason?: string) {
        return yield* Mark.markFailed(sql, id, code, message, reason)
      }
    ),
    markNotified: (id, consumedStatusMessage) => Mark.markNotified(sql, id, consumedStatusMessage),
    markRetried: (id, retryId) => Mark.markRetried(sql, id, retryId),
    clearStatusMessage: (id, messageId) => SetMessage.clearStatusMessage(sql, id, messageId),
    schedulePoll: (id, at) => schedulePoll(sql, id, at),
    dueForPolling: (limit, excluding) => dueForPolling(sql, limit, excluding),
    nextPollAt: (excluding) => nextPollAt(sql, excluding),
    withStatus: (status, limit) => withStatus(sql, status, limit),
    failedUnnotified: (limit) => failedUnnotified(sql, limit),
    overdue: (limit, succeededGrace) => overdue(sql, limit, succeededGrace),
    openStatusMessages: (limit) => openStatusMessages(sql, limit),
    statusesToRefresh: (editedBefore, limit) => statusesToRefresh(sql, editedBefore, limit),
    inFlight: inFlight(sql),
    counts: counts(sql),
    sentSince: (since) => sentSince(sql, since),
    countSince: (since) => countSince(sql, since),
    purgeFinished: (before, limit) => purgeFinished(sql, before, limit)
  })
})

/** The `generations` table's service. Needs `SqlClient` (migrations 0005-0010 applied). */
export class Generations extends Context.Service<Generations, GenerationsShape>()("zimage-bot/Generations") {
  static readonly layer = Layer.effect(Generations, make)
}
