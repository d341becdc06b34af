/**
 * The `generations` table: the truth about every picture a user asked for.
 * All of its SQL lives here. Fibers of the generation engine are caches of
 * these rows; a new leader resumes from them.
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
import { Context, DateTime, Duration, Effect, Layer, Option, Schema } from "effect"
import { SqlClient } from "effect/sql/SqlClient"
import type { SqlError } from "effect/sql/SqlError"
import type { AspectRatio, Lang } from "../chat/Messages.ts"
import { Int8, Int8Id as Id } from "../database/SqlColumns.ts"
import * as UtcTime from "../platform/UtcTime.ts"

export const CHANNEL = "generations"

export type GenerationStatus = "queued" | "submitting" | "submitted" | "succeeded" | "delivered" | "failed"
export const ACTIVE_STATUSES: ReadonlyArray<GenerationStatus> = ["queued", "submitting", "submitted", "succeeded"]

export class GenerationLimitReached extends Schema.TaggedError<GenerationLimitReached>()("GenerationLimitReached", {
  kind: Schema.Literals(["busy", "daily"]),
  limit: Schema.Int,
  message: Schema.String
}) {}

/** Migration 0005. */
export const migration = Effect.gen(function*() {
  const sql = yield* SqlClient
  yield* sql`
    CREATE TABLE generations (
      id bigserial PRIMARY KEY,
      user_id bigint NOT NULL,
      chat_id bigint NOT NULL,
      lang text NOT NULL,
      prompt text NOT NULL,
      aspect_ratio text NOT NULL,
      model text NOT NULL DEFAULT 'z-image',
      status text NOT NULL DEFAULT 'queued'
        CHECK (status IN ('queued', 'submitting', 'submitted', 'succeeded', 'delivered', 'failed')),
      source_update_id bigint UNIQUE,
      submit_ref text,
      kie_task_id text UNIQUE,
      status_message_id bigint,
      status_text text,
      status_edited_at timestamptz,
      photo_message_id bigint,
      result_urls jsonb,
      fail_code text,
      fail_message text,
      created_at timestamptz NOT NULL,
      deadline_at timestamptz NOT NULL,
      submitted_at timestamptz,
      next_poll_at timestamptz,
      completed_at timestamptz,
      delivered_at timestamptz,
      notified_at timestamptz,
      updated_at timestamptz NOT NULL,
      CHECK (status NOT IN ('submitted', 'succeeded', 'delivered') OR kie_task_id IS NOT NULL)
    )`
  yield* sql`
    CREATE INDEX generations_active ON generations (status, created_at)
    WHERE status IN ('queued', 'submitting', 'submitted', 'succeeded')`
  yield* sql`CREATE INDEX generations_user_created ON generations (user_id, created_at)`
  yield* sql`
    CREATE INDEX generations_unnotified ON generations (id)
    WHERE status = 'failed' AND notified_at IS NULL`
})

/**
 * Migration 0006, for the generation engine:
 * - `fail_reason`: what the user is told (in their language), kept with the
 *   row so the notice survives a failover between failing and telling;
 *   `fail_code`/`fail_message` stay the operator's machine code and detail;
 * - `document_message_id`: the uncompressed original was sent (resume sends
 *   it only if this is empty);
 * - an index of finished rows whose status message still shows progress
 *   (the engine clears `status_message_id` once it finalized the message;
 *   the chat flow may record one after the row already finished).
 */
export const migrationEngine = Effect.gen(function*() {
  const sql = yield* SqlClient
  yield* sql`ALTER TABLE generations ADD COLUMN fail_reason text`
  yield* sql`ALTER TABLE generations ADD COLUMN document_message_id bigint`
  yield* sql`
    CREATE INDEX generations_open_status_message ON generations (id)
    WHERE status IN ('delivered', 'failed') AND status_message_id IS NOT NULL`
  yield* sql`CREATE INDEX generations_poll_due ON generations (next_poll_at) WHERE status = 'submitted'`
})

/**
 * Migration 0007: `retried_by`, the generation a "🔄 Попробовать снова" press
 * started from this failed one, so a second press of that old button is stale.
 */
export const migrationRetries = Effect.gen(function*() {
  const sql = yield* SqlClient
  yield* sql`ALTER TABLE generations ADD COLUMN retried_by bigint`
})

/**
 * Migration 0008: an index for `sentSince`, which a new leader runs to count
 * its predecessor's recent createTask requests; the table keeps every
 * generation, so a scan would grow with it.
 */
export const migrationSentAt = Effect.gen(function*() {
  const sql = yield* SqlClient
  yield* sql`CREATE INDEX generations_submitted_at ON generations (submitted_at) WHERE submitted_at IS NOT NULL`
})

// ---------------------------------------------------------------------------
// Rows


const Row = Schema.Struct({
  id: Id,
  user_id: Int8,
  chat_id: Int8,
  lang: Schema.Literals(["ru", "en"]),
  prompt: Schema.String,
  aspect_ratio: Schema.String,
  status: Schema.Literals(["queued", "submitting", "submitted", "succeeded", "delivered", "failed"]),
  submit_ref: Schema.NullOr(Schema.String),
  kie_task_id: Schema.NullOr(Schema.String),
  status_message_id: Schema.NullOr(Int8),
  status_text: Schema.NullOr(Schema.String),
  status_edited_at: Schema.Unknown,
  photo_message_id: Schema.NullOr(Int8),
  document_message_id: Schema.NullOr(Int8),
  result_urls: Schema.NullOr(Schema.Array(Schema.String)),
  fail_code: Schema.NullOr(Schema.String),
  fail_message: Schema.NullOr(Schema.String),
  fail_reason: Schema.NullOr(Schema.String),
  retried_by: Schema.NullOr(Id),
  source_update_id: Schema.NullOr(Int8),
  created_at: Schema.Unknown,
  deadline_at: Schema.Unknown,
  submitted_at: Schema.Unknown,
  completed_at: Schema.Unknown,
  notified_at: Schema.Unknown,
  updated_at: Schema.Unknown
})

export interface Generation {
  readonly id: string
  readonly userId: number
  readonly chatId: number
  readonly lang: Lang
  readonly prompt: string
  readonly aspectRatio: AspectRatio
  readonly status: GenerationStatus
  readonly submitRef: string | null
  readonly kieTaskId: string | null
  readonly statusMessageId: number | null
  readonly statusText: string | null
  readonly statusEditedAt: Option.Option<DateTime.Utc>
  /** The message that carries the result (a photo, or a document when too large for one). */
  readonly photoMessageId: number | null
  /** The uncompressed original as a document (the result message itself when that is a document). */
  readonly documentMessageId: number | null
  readonly resultUrls: ReadonlyArray<string>
  readonly failCode: string | null
  readonly failMessage: string | null
  /** What the user is told, in their language. */
  readonly failReason: string | null
  /** The generation that retried this failed one, if its retry button was used. */
  readonly retriedBy: string | null
  /** The update that asked for this generation. */
  readonly sourceUpdateId: number | null
  readonly createdAt: DateTime.Utc
  readonly deadlineAt: DateTime.Utc
  /** When createTask was (last) sent for it. */
  readonly submittedAt: Option.Option<DateTime.Utc>
  readonly completedAt: Option.Option<DateTime.Utc>
  readonly notifiedAt: Option.Option<DateTime.Utc>
  readonly updatedAt: DateTime.Utc
}

const toGeneration = (row: typeof Row.Type): Generation => ({
  id: row.id,
  userId: row.user_id,
  chatId: row.chat_id,
  lang: row.lang,
  prompt: row.prompt,
  aspectRatio: row.aspect_ratio as AspectRatio,
  status: row.status,
  submitRef: row.submit_ref,
  kieTaskId: row.kie_task_id,
  statusMessageId: row.status_message_id,
  statusText: row.status_text,
  statusEditedAt: UtcTime.fromUnknown(row.status_edited_at),
  photoMessageId: row.photo_message_id,
  documentMessageId: row.document_message_id,
  resultUrls: row.result_urls ?? [],
  failCode: row.fail_code,
  failMessage: row.fail_message,
  failReason: row.fail_reason,
  retriedBy: row.retried_by,
  sourceUpdateId: row.source_update_id,
  // Written by us from the Clock; an unreadable value would be a bug, and
  // epoch 0 makes such a row look overdue rather than immortal.
  createdAt: Option.getOrElse(UtcTime.fromUnknown(row.created_at), () => DateTime.makeUnsafe(0)),
  deadlineAt: Option.getOrElse(UtcTime.fromUnknown(row.deadline_at), () => DateTime.makeUnsafe(0)),
  submittedAt: UtcTime.fromUnknown(row.submitted_at),
  completedAt: UtcTime.fromUnknown(row.completed_at),
  notifiedAt: UtcTime.fromUnknown(row.notified_at),
  updatedAt: Option.getOrElse(UtcTime.fromUnknown(row.updated_at), () => DateTime.makeUnsafe(0))
})

const decodeRows = (rows: ReadonlyArray<unknown>): Effect.Effect<ReadonlyArray<Generation>> =>
  Schema.decodeUnknownEffect(Schema.Array(Row))(rows).pipe(
    Effect.map((decoded) => decoded.map(toGeneration)),
    Effect.orDie
  )

const first = (rows: ReadonlyArray<Generation>): Option.Option<Generation> => Option.fromNullishOr(rows[0])

// ---------------------------------------------------------------------------

export interface NewGeneration {
  readonly userId: number
  readonly chatId: number
  readonly lang: Lang
  readonly prompt: string
  readonly aspectRatio: AspectRatio
  /** The update that asked for it: handling that update again finds this row instead of making another. */
  readonly sourceUpdateId: number
}

export interface Limits {
  readonly maxActivePerUser: number
  /** 0: no daily limit. Counted per UTC day, failed generations excluded. */
  readonly dailyLimit: number
  readonly timeout: Duration.Duration
}

export interface QueuePosition {
  readonly id: string
  /** 1 = next to be submitted. */
  readonly position: number
}

export interface GenerationsShape {
  /** Records a generation (or finds the one `sourceUpdateId` already made) and wakes the engine. */
  readonly create: (
    input: NewGeneration,
    limits: Limits
  ) => Effect.Effect<{ readonly generation: Generation; readonly created: boolean }, GenerationLimitReached | SqlError>
  readonly find: (id: string) => Effect.Effect<Option.Option<Generation>, SqlError>
  readonly findByTaskId: (taskId: string) => Effect.Effect<Option.Option<Generation>, SqlError>
  readonly setStatusMessage: (id: string, messageId: number, text: string) => Effect.Effect<void, SqlError>
  /** Records the text last shown in the status message. */
  readonly setStatusText: (id: string, text: string) => Effect.Effect<void, SqlError>
  /**
   * Queued generations in the order they will be submitted: oldest first, one
   * per user at a time (a user's generations already at Kie count as turns taken).
   */
  readonly nextQueued: (limit: number, excluding: ReadonlyArray<string>) => Effect.Effect<ReadonlyArray<Generation>, SqlError>
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
  readonly markSucceeded: (id: string, resultUrls: ReadonlyArray<string>) => Effect.Effect<boolean, SqlError>
  /** Records the message that carries the result (photo, or document when too large). */
  readonly setPhotoMessage: (id: string, messageId: number) => Effect.Effect<void, SqlError>
  /** Records the message with the uncompressed original. */
  readonly setDocumentMessage: (id: string, messageId: number) => Effect.Effect<void, SqlError>
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
  readonly schedulePoll: (id: string, at: DateTime.Utc) => Effect.Effect<void, SqlError>
  /** `submitted` generations whose next poll is due, soonest first. */
  readonly dueForPolling: (limit: number, excluding?: ReadonlyArray<string>) => Effect.Effect<ReadonlyArray<Generation>, SqlError>
  /** When the next poll of a `submitted` generation (other than `excluding`) is due. */
  readonly nextPollAt: (excluding: ReadonlyArray<string>) => Effect.Effect<Option.Option<DateTime.Utc>, SqlError>
  readonly withStatus: (status: GenerationStatus, limit: number) => Effect.Effect<ReadonlyArray<Generation>, SqlError>
  readonly failedUnnotified: (limit: number) => Effect.Effect<ReadonlyArray<Generation>, SqlError>
  /**
   * Non-terminal generations whose deadline has passed; `succeeded` ones only
   * once `succeededGrace` more has passed (their picture exists and is paid for).
   */
  readonly overdue: (limit: number, succeededGrace?: Duration.Duration) => Effect.Effect<ReadonlyArray<Generation>, SqlError>
  /** Finished generations whose status message still shows progress (delivered, or failed and told). */
  readonly openStatusMessages: (limit: number) => Effect.Effect<ReadonlyArray<Generation>, SqlError>
  /** Unfinished generations with a status message last edited at or before `editedBefore`, least recently edited first. */
  readonly statusesToRefresh: (editedBefore: DateTime.Utc, limit: number) => Effect.Effect<ReadonlyArray<Generation>, SqlError>
  /** Generations a user is waiting for: not yet delivered or failed. */
  readonly inFlight: Effect.Effect<number, SqlError>
  /** Unfinished generations by status. */
  readonly counts: Effect.Effect<GenerationCounts, SqlError>
  /** When createTask requests were last sent, for those sent after `since` (by any instance). */
  readonly sentSince: (since: DateTime.Utc) => Effect.Effect<ReadonlyArray<DateTime.Utc>, SqlError>
}

export interface GenerationCounts {
  readonly queued: number
  readonly submitting: number
  readonly submitted: number
  readonly succeeded: number
}

const make = Effect.gen(function*() {
  const sql = yield* SqlClient
  const now = DateTime.now
  const asDate = (dt: DateTime.Utc) => DateTime.toDateUtc(dt)

  const create = Effect.fn("Generations.create")(function*(input: NewGeneration, limits: Limits) {
    const at = yield* now
    const startOfDay = DateTime.startOf(at, "day")
    return yield* sql.withTransaction(Effect.gen(function*() {
      // One user's requests take turns, so two clicks cannot both pass the limits.
      yield* sql`SELECT pg_advisory_xact_lock(hashtext('zimage-bot/generations/user'), hashtext(${String(input.userId)}))`
      const existing = yield* sql`SELECT * FROM generations WHERE source_update_id = ${input.sourceUpdateId}`.pipe(
        Effect.flatMap(decodeRows)
      )
      if (existing.length > 0) return { generation: existing[0]!, created: false }
      const [counts] = yield* sql<{ active: bigint; today: bigint }>`
        SELECT
          count(*) FILTER (WHERE status IN ('queued', 'submitting', 'submitted', 'succeeded')) AS active,
          count(*) FILTER (WHERE created_at >= ${asDate(startOfDay)} AND status <> 'failed') AS today
        FROM generations WHERE user_id = ${input.userId}`
      if (Number(counts!.active) >= limits.maxActivePerUser) {
        return yield* new GenerationLimitReached({
          kind: "busy",
          limit: limits.maxActivePerUser,
          message: `user ${input.userId} already has ${counts!.active} generation(s) in flight`
        })
      }
      if (limits.dailyLimit > 0 && Number(counts!.today) >= limits.dailyLimit) {
        return yield* new GenerationLimitReached({
          kind: "daily",
          limit: limits.dailyLimit,
          message: `user ${input.userId} reached the daily limit of ${limits.dailyLimit}`
        })
      }
      const deadline = DateTime.addDuration(at, limits.timeout)
      const inserted = yield* sql`
        INSERT INTO generations
          (user_id, chat_id, lang, prompt, aspect_ratio, status, source_update_id, created_at, deadline_at, updated_at)
        VALUES (${input.userId}, ${input.chatId}, ${input.lang}, ${input.prompt}, ${input.aspectRatio}, 'queued',
          ${input.sourceUpdateId}, ${asDate(at)}, ${asDate(deadline)}, ${asDate(at)})
        RETURNING *`.pipe(Effect.flatMap(decodeRows))
      // Delivered at commit: wakes the engine on the ACTIVE instance.
      yield* sql`SELECT pg_notify(${CHANNEL}, ${inserted[0]!.id})`
      return { generation: inserted[0]!, created: true }
    }))
  })

  const find = (id: string) => sql`SELECT * FROM generations WHERE id = ${id}::bigint`.pipe(Effect.flatMap(decodeRows), Effect.map(first))
  const findByTaskId = (taskId: string) =>
    sql`SELECT * FROM generations WHERE kie_task_id = ${taskId}`.pipe(Effect.flatMap(decodeRows), Effect.map(first))

  /** Whether a statement touched a row. */
  const updated = <E>(statement: Effect.Effect<ReadonlyArray<unknown>, E>) =>
    Effect.map(statement, (rows) => rows.length > 0)

  const setStatusMessage = (id: string, messageId: number, text: string) =>
    Effect.flatMap(now, (at) =>
      sql`UPDATE generations SET status_message_id = ${messageId}, status_text = ${text},
            status_edited_at = ${asDate(at)}, updated_at = ${asDate(at)}
          WHERE id = ${id}::bigint`.pipe(Effect.asVoid))

  const setStatusText = (id: string, text: string) =>
    Effect.flatMap(now, (at) =>
      sql`UPDATE generations SET status_text = ${text}, status_edited_at = ${asDate(at)}, updated_at = ${asDate(at)}
          WHERE id = ${id}::bigint`.pipe(Effect.asVoid))

  /**
   * Fair order: a user's n-th waiting generation, counting the ones already
   * at Kie (`submitting`/`submitted`), is in round n; rounds go in turn, and
   * within a round the oldest goes first. So nobody gets a second one sent
   * while someone else still waits for their first.
   */
  const rounds = sql`
    SELECT q.id, q.created_at,
      row_number() OVER (PARTITION BY q.user_id ORDER BY q.created_at, q.id) + coalesce(f.n, 0) AS round
    FROM generations q
    LEFT JOIN (
      SELECT user_id, count(*) AS n FROM generations WHERE status IN ('submitting', 'submitted') GROUP BY user_id
    ) f ON f.user_id = q.user_id
    WHERE q.status = 'queued'`

  const fairOrder = (limit: number, excluding: ReadonlyArray<string>) =>
    sql`
      SELECT g.* FROM (${rounds}) r JOIN generations g USING (id)
      WHERE NOT (g.id::text = ANY(${excluding}))
      ORDER BY r.round, g.created_at, g.id
      LIMIT ${limit}`

  const nextQueued = (limit: number, excluding: ReadonlyArray<string>) =>
    fairOrder(limit, excluding).pipe(Effect.flatMap(decodeRows))

  const queuePositions = sql<{ id: string; position: bigint }>`
    SELECT id::text AS id, row_number() OVER (ORDER BY round, created_at, id) AS position FROM (${rounds}) r`.pipe(
    Effect.map((rows) => rows.map((r) => ({ id: r.id, position: Number(r.position) })))
  )

  const markSubmitting = (id: string, ref: string) =>
    Effect.flatMap(now, (at) =>
      updated(sql`
        UPDATE generations SET status = 'submitting', submit_ref = ${ref}, submitted_at = ${asDate(at)},
          updated_at = ${asDate(at)}
        WHERE id = ${id}::bigint AND status IN ('queued', 'submitting') RETURNING id`))

  const markSubmitted = (id: string, taskId: string, firstPollAt: DateTime.Utc) =>
    Effect.flatMap(now, (at) =>
      updated(sql`
        UPDATE generations SET status = 'submitted', kie_task_id = ${taskId},
          submitted_at = coalesce(submitted_at, ${asDate(at)}),
          next_poll_at = ${asDate(firstPollAt)}, updated_at = ${asDate(at)}
        WHERE id = ${id}::bigint AND status IN ('queued', 'submitting') RETURNING id`))

  const requeue = (id: string) =>
    Effect.flatMap(now, (at) =>
      updated(sql`
        UPDATE generations SET status = 'queued', submit_ref = NULL, updated_at = ${asDate(at)}
        WHERE id = ${id}::bigint AND status = 'submitting' RETURNING id`))

  const markSucceeded = (id: string, resultUrls: ReadonlyArray<string>) =>
    Effect.flatMap(now, (at) =>
      updated(sql`
        UPDATE generations SET status = 'succeeded', result_urls = ${JSON.stringify(resultUrls)}::jsonb,
          completed_at = ${asDate(at)}, next_poll_at = NULL, updated_at = ${asDate(at)}
        WHERE id = ${id}::bigint AND status = 'submitted' RETURNING id`))

  const setPhotoMessage = (id: string, messageId: number) =>
    Effect.flatMap(now, (at) =>
      sql`UPDATE generations SET photo_message_id = ${messageId}, updated_at = ${asDate(at)}
          WHERE id = ${id}::bigint`.pipe(Effect.asVoid))

  const markDelivered = (id: string) =>
    Effect.flatMap(now, (at) =>
      updated(sql`
        UPDATE generations SET status = 'delivered', delivered_at = ${asDate(at)}, updated_at = ${asDate(at)}
        WHERE id = ${id}::bigint AND status = 'succeeded' RETURNING id`))

  const setDocumentMessage = (id: string, messageId: number) =>
    Effect.flatMap(now, (at) =>
      sql`UPDATE generations SET document_message_id = ${messageId}, updated_at = ${asDate(at)}
          WHERE id = ${id}::bigint`.pipe(Effect.asVoid))

  const markFailed = (id: string, code: string, message: string, reason?: string) =>
    Effect.flatMap(now, (at) =>
      updated(sql`
        UPDATE generations SET status = 'failed', fail_code = ${code.slice(0, 100)},
          fail_message = ${message.slice(0, 1000)}, fail_reason = ${reason === undefined ? null : reason.slice(0, 1000)},
          completed_at = ${asDate(at)}, next_poll_at = NULL, updated_at = ${asDate(at)}
        WHERE id = ${id}::bigint AND status IN ('queued', 'submitting', 'submitted', 'succeeded') RETURNING id`))

  const markRetried = (id: string, retryId: string) =>
    Effect.flatMap(now, (at) =>
      updated(sql`
        UPDATE generations SET retried_by = ${retryId}::bigint, updated_at = ${asDate(at)}
        WHERE id = ${id}::bigint AND status = 'failed' AND (retried_by IS NULL OR retried_by = ${retryId}::bigint)
        RETURNING id`))

  const markNotified = (id: string, consumedStatusMessage?: number) =>
    Effect.flatMap(now, (at) =>
      sql`UPDATE generations SET notified_at = ${asDate(at)}, updated_at = ${asDate(at)},
            status_message_id = CASE WHEN status_message_id = ${consumedStatusMessage ?? null}::bigint
              THEN NULL ELSE status_message_id END
          WHERE id = ${id}::bigint`.pipe(Effect.asVoid))

  const clearStatusMessage = (id: string, messageId: number) =>
    Effect.flatMap(now, (at) =>
      sql`UPDATE generations SET status_message_id = NULL, updated_at = ${asDate(at)}
          WHERE id = ${id}::bigint AND status_message_id = ${messageId}`.pipe(Effect.asVoid))

  const schedulePoll = (id: string, at: DateTime.Utc) =>
    sql`UPDATE generations SET next_poll_at = ${asDate(at)} WHERE id = ${id}::bigint AND status = 'submitted'`.pipe(
      Effect.asVoid
    )

  const dueForPolling = (limit: number, excluding: ReadonlyArray<string> = []) =>
    Effect.flatMap(now, (at) =>
      sql`SELECT * FROM generations WHERE status = 'submitted' AND next_poll_at <= ${asDate(at)}
            AND NOT (id::text = ANY(${excluding}))
          ORDER BY next_poll_at LIMIT ${limit}`.pipe(Effect.flatMap(decodeRows)))

  const nextPollAt = (excluding: ReadonlyArray<string>) =>
    sql<{ at: unknown }>`
      SELECT next_poll_at AS at FROM generations
      WHERE status = 'submitted' AND next_poll_at IS NOT NULL AND NOT (id::text = ANY(${excluding}))
      ORDER BY next_poll_at LIMIT 1`.pipe(
      Effect.map((rows) => (rows.length === 0 ? Option.none() : UtcTime.fromUnknown(rows[0]!.at)))
    )

  const withStatus = (status: GenerationStatus, limit: number) =>
    sql`SELECT * FROM generations WHERE status = ${status} ORDER BY created_at, id LIMIT ${limit}`.pipe(
      Effect.flatMap(decodeRows)
    )

  const failedUnnotified = (limit: number) =>
    sql`SELECT * FROM generations WHERE status = 'failed' AND notified_at IS NULL ORDER BY id LIMIT ${limit}`.pipe(
      Effect.flatMap(decodeRows)
    )

  const overdue = (limit: number, succeededGrace: Duration.Duration = Duration.zero) =>
    Effect.flatMap(now, (at) =>
      sql`SELECT * FROM generations
          WHERE (status IN ('queued', 'submitting', 'submitted') AND deadline_at <= ${asDate(at)})
             OR (status = 'succeeded' AND deadline_at <= ${asDate(DateTime.subtractDuration(at, succeededGrace))})
          ORDER BY deadline_at LIMIT ${limit}`.pipe(Effect.flatMap(decodeRows)))

  const openStatusMessages = (limit: number) =>
    sql`SELECT * FROM generations
        WHERE status IN ('delivered', 'failed') AND status_message_id IS NOT NULL
          AND (status = 'delivered' OR notified_at IS NOT NULL)
        ORDER BY id LIMIT ${limit}`.pipe(Effect.flatMap(decodeRows))

  const statusesToRefresh = (editedBefore: DateTime.Utc, limit: number) =>
    sql`SELECT * FROM generations
        WHERE status IN ('queued', 'submitting', 'submitted', 'succeeded') AND status_message_id IS NOT NULL
          AND (status_edited_at IS NULL OR status_edited_at <= ${asDate(editedBefore)})
        ORDER BY status_edited_at NULLS FIRST, id LIMIT ${limit}`.pipe(Effect.flatMap(decodeRows))

  const inFlight = sql<{ n: bigint }>`
    SELECT count(*) AS n FROM generations WHERE status IN ('queued', 'submitting', 'submitted', 'succeeded')`.pipe(
    Effect.map((rows) => Number(rows[0]?.n ?? 0))
  )

  const counts = sql<{ status: string; n: bigint }>`
    SELECT status, count(*) AS n FROM generations
    WHERE status IN ('queued', 'submitting', 'submitted', 'succeeded') GROUP BY status`.pipe(
    Effect.map((rows): GenerationCounts => {
      const by = new Map(rows.map((r) => [r.status, Number(r.n)]))
      return {
        queued: by.get("queued") ?? 0,
        submitting: by.get("submitting") ?? 0,
        submitted: by.get("submitted") ?? 0,
        succeeded: by.get("succeeded") ?? 0
      }
    })
  )

  const sentSince = (since: DateTime.Utc) =>
    sql<{ submitted_at: unknown }>`
      SELECT submitted_at FROM generations WHERE submitted_at > ${asDate(since)} ORDER BY submitted_at`.pipe(
      Effect.map((rows) => rows.flatMap((row) => Option.toArray(UtcTime.fromUnknown(row.submitted_at))))
    )

  return Generations.of({
    sentSince,
    create,
    find,
    findByTaskId,
    setStatusMessage,
    setStatusText,
    nextQueued,
    queuePositions,
    markSubmitting,
    markSubmitted,
    requeue,
    markSucceeded,
    setPhotoMessage,
    setDocumentMessage,
    markDelivered,
    markFailed,
    markNotified,
    markRetried,
    clearStatusMessage,
    schedulePoll,
    dueForPolling,
    nextPollAt,
    withStatus,
    failedUnnotified,
    overdue,
    openStatusMessages,
    statusesToRefresh,
    inFlight,
    counts
  })
})

export class Generations extends Context.Service<Generations, GenerationsShape>()("zimage-bot/Generations") {
  static readonly layer = Layer.effect(Generations, make)
}
