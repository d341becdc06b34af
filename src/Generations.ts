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
 * - `succeeded`: result URLs stored; delivery pending.
 * - `delivered` / `failed`: terminal.
 *
 * Every timestamp written here comes from the Effect `Clock` (UTC), so the
 * engine's deadlines follow a TestClock in tests.
 */
import { Context, DateTime, Effect, Layer, Option, Schema, SchemaTransformation } from "effect"
import { SqlClient } from "effect/sql/SqlClient"
import type { SqlError } from "effect/sql/SqlError"
import type { AspectRatio, Lang } from "./Messages.ts"
import * as UtcTime from "./UtcTime.ts"

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

// ---------------------------------------------------------------------------
// Rows

const Int8 = Schema.BigInt.pipe(
  Schema.decodeTo(Schema.Int, SchemaTransformation.transform({ decode: (b) => Number(b), encode: (n) => BigInt(n) }))
)
const Id = Schema.BigInt.pipe(
  Schema.decodeTo(Schema.String, SchemaTransformation.transform({ decode: (b) => b.toString(), encode: (s) => BigInt(s) }))
)

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
  result_urls: Schema.NullOr(Schema.Array(Schema.String)),
  fail_code: Schema.NullOr(Schema.String),
  fail_message: Schema.NullOr(Schema.String),
  created_at: Schema.Unknown,
  deadline_at: Schema.Unknown,
  submitted_at: Schema.Unknown
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
  readonly photoMessageId: number | null
  readonly resultUrls: ReadonlyArray<string>
  readonly failCode: string | null
  readonly failMessage: string | null
  readonly createdAt: DateTime.Utc
  readonly deadlineAt: DateTime.Utc
  readonly submittedAt: Option.Option<DateTime.Utc>
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
  resultUrls: row.result_urls ?? [],
  failCode: row.fail_code,
  failMessage: row.fail_message,
  // Written by us from the Clock; an unreadable value would be a bug, and
  // epoch 0 makes such a row look overdue rather than immortal.
  createdAt: Option.getOrElse(UtcTime.fromUnknown(row.created_at), () => DateTime.makeUnsafe(0)),
  deadlineAt: Option.getOrElse(UtcTime.fromUnknown(row.deadline_at), () => DateTime.makeUnsafe(0)),
  submittedAt: UtcTime.fromUnknown(row.submitted_at)
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
  readonly timeout: import("effect").Duration.Duration
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
  /** Queued generations in the order they will be submitted: oldest first, one per user per round. */
  readonly nextQueued: (limit: number, excluding: ReadonlyArray<string>) => Effect.Effect<ReadonlyArray<Generation>, SqlError>
  readonly queuePositions: Effect.Effect<ReadonlyArray<QueuePosition>, SqlError>
  /** queued → submitting, just before createTask is sent. False if the row moved on meanwhile. */
  readonly markSubmitting: (id: string, ref: string) => Effect.Effect<boolean, SqlError>
  /** submitting → submitted with the task id, in one statement. */
  readonly markSubmitted: (id: string, taskId: string, firstPollAt: DateTime.Utc) => Effect.Effect<boolean, SqlError>
  /** Back to queued: createTask proved that nothing was created (e.g. Kie said 429 or 5xx). */
  readonly requeue: (id: string) => Effect.Effect<boolean, SqlError>
  readonly markSucceeded: (id: string, resultUrls: ReadonlyArray<string>) => Effect.Effect<boolean, SqlError>
  readonly setPhotoMessage: (id: string, messageId: number) => Effect.Effect<void, SqlError>
  readonly markDelivered: (id: string) => Effect.Effect<boolean, SqlError>
  /** Any non-terminal status → failed. */
  readonly markFailed: (id: string, code: string, message: string) => Effect.Effect<boolean, SqlError>
  readonly markNotified: (id: string) => Effect.Effect<void, SqlError>
  readonly schedulePoll: (id: string, at: DateTime.Utc) => Effect.Effect<void, SqlError>
  readonly dueForPolling: (limit: number) => Effect.Effect<ReadonlyArray<Generation>, SqlError>
  readonly withStatus: (status: GenerationStatus, limit: number) => Effect.Effect<ReadonlyArray<Generation>, SqlError>
  readonly failedUnnotified: (limit: number) => Effect.Effect<ReadonlyArray<Generation>, SqlError>
  /** Non-terminal generations whose deadline has passed. */
  readonly overdue: (limit: number) => Effect.Effect<ReadonlyArray<Generation>, SqlError>
  /** Generations a user is waiting for: not yet delivered or failed. */
  readonly inFlight: Effect.Effect<number, SqlError>
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

  const fairOrder = (limit: number, excluding: ReadonlyArray<string>) =>
    sql`
      SELECT g.* FROM (
        SELECT id, row_number() OVER (PARTITION BY user_id ORDER BY created_at, id) AS round
        FROM generations WHERE status = 'queued'
      ) q JOIN generations g USING (id)
      WHERE NOT (g.id::text = ANY(${excluding}))
      ORDER BY q.round, g.created_at, g.id
      LIMIT ${limit}`

  const nextQueued = (limit: number, excluding: ReadonlyArray<string>) =>
    fairOrder(limit, excluding).pipe(Effect.flatMap(decodeRows))

  const queuePositions = sql<{ id: string; position: bigint }>`
    SELECT id::text AS id, row_number() OVER (ORDER BY round, created_at, id) AS position FROM (
      SELECT id, created_at, row_number() OVER (PARTITION BY user_id ORDER BY created_at, id) AS round
      FROM generations WHERE status = 'queued'
    ) q`.pipe(Effect.map((rows) => rows.map((r) => ({ id: r.id, position: Number(r.position) }))))

  const markSubmitting = (id: string, ref: string) =>
    Effect.flatMap(now, (at) =>
      updated(sql`
        UPDATE generations SET status = 'submitting', submit_ref = ${ref}, updated_at = ${asDate(at)}
        WHERE id = ${id}::bigint AND status IN ('queued', 'submitting') RETURNING id`))

  const markSubmitted = (id: string, taskId: string, firstPollAt: DateTime.Utc) =>
    Effect.flatMap(now, (at) =>
      updated(sql`
        UPDATE generations SET status = 'submitted', kie_task_id = ${taskId}, submitted_at = ${asDate(at)},
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

  const markFailed = (id: string, code: string, message: string) =>
    Effect.flatMap(now, (at) =>
      updated(sql`
        UPDATE generations SET status = 'failed', fail_code = ${code}, fail_message = ${message.slice(0, 1000)},
          completed_at = ${asDate(at)}, next_poll_at = NULL, updated_at = ${asDate(at)}
        WHERE id = ${id}::bigint AND status IN ('queued', 'submitting', 'submitted', 'succeeded') RETURNING id`))

  const markNotified = (id: string) =>
    Effect.flatMap(now, (at) =>
      sql`UPDATE generations SET notified_at = ${asDate(at)}, updated_at = ${asDate(at)}
          WHERE id = ${id}::bigint`.pipe(Effect.asVoid))

  const schedulePoll = (id: string, at: DateTime.Utc) =>
    sql`UPDATE generations SET next_poll_at = ${asDate(at)} WHERE id = ${id}::bigint AND status = 'submitted'`.pipe(
      Effect.asVoid
    )

  const dueForPolling = (limit: number) =>
    Effect.flatMap(now, (at) =>
      sql`SELECT * FROM generations WHERE status = 'submitted' AND next_poll_at <= ${asDate(at)}
          ORDER BY next_poll_at LIMIT ${limit}`.pipe(Effect.flatMap(decodeRows)))

  const withStatus = (status: GenerationStatus, limit: number) =>
    sql`SELECT * FROM generations WHERE status = ${status} ORDER BY created_at, id LIMIT ${limit}`.pipe(
      Effect.flatMap(decodeRows)
    )

  const failedUnnotified = (limit: number) =>
    sql`SELECT * FROM generations WHERE status = 'failed' AND notified_at IS NULL ORDER BY id LIMIT ${limit}`.pipe(
      Effect.flatMap(decodeRows)
    )

  const overdue = (limit: number) =>
    Effect.flatMap(now, (at) =>
      sql`SELECT * FROM generations
          WHERE status IN ('queued', 'submitting', 'submitted', 'succeeded') AND deadline_at <= ${asDate(at)}
          ORDER BY deadline_at LIMIT ${limit}`.pipe(Effect.flatMap(decodeRows)))

  const inFlight = sql<{ n: bigint }>`
    SELECT count(*) AS n FROM generations WHERE status IN ('queued', 'submitting', 'submitted', 'succeeded')`.pipe(
    Effect.map((rows) => Number(rows[0]?.n ?? 0))
  )

  return Generations.of({
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
    markDelivered,
    markFailed,
    markNotified,
    schedulePoll,
    dueForPolling,
    withStatus,
    failedUnnotified,
    overdue,
    inFlight
  })
})

export class Generations extends Context.Service<Generations, GenerationsShape>()("zimage-bot/Generations") {
  static readonly layer = Layer.effect(Generations, make)
}
