/**
 * A `generations` row: its statuses, its schema as PostgreSQL returns it, and
 * the `Generation` the rest of the bot reads. Every statement that returns
 * whole rows (`SELECT *`, `RETURNING *`) decodes them with `decodeRows`.
 */
import { DateTime, Effect, Option, Schema } from "effect"
import * as Statement from "effect/sql/Statement"
import type { AspectRatio, Lang } from "../../texts/Messages.ts"
import { Int8, Int8Id as Id } from "../../database/SqlColumns.ts"
import * as UtcTime from "../../platform/UtcTime.ts"

/** Every status, in the order a generation goes through them (`failed` may follow any unfinished one). */
export const STATUSES = ["queued", "submitting", "submitted", "succeeded", "delivered", "failed"] as const

/** Where a generation is in its life (see `Generations.ts`). */
export type GenerationStatus = typeof STATUSES[number]

/** The statuses of a generation its user still waits for: neither delivered nor failed. */
export const UNFINISHED_STATUSES = ["queued", "submitting", "submitted", "succeeded"] as const satisfies ReadonlyArray<
  GenerationStatus
>

/**
 * `UNFINISHED_STATUSES` as the SQL list `'queued', 'submitting', ...`, for
 * `status IN (${unfinished})`. Literals rather than parameters: a query's
 * predicate then matches the partial index `generations_active` as written.
 * The values are our own constants; quotes are doubled all the same.
 */
export const unfinished: Statement.Fragment = Statement.fragment([
  Statement.literal(UNFINISHED_STATUSES.map((status) => `'${status.replaceAll("'", "''")}'`).join(", "))
])

const Row = Schema.Struct({
  id: Id,
  user_id: Int8,
  chat_id: Int8,
  lang: Schema.Literals(["ru", "en"]),
  prompt: Schema.String,
  aspect_ratio: Schema.String,
  model: Schema.String,
  status: Schema.Literals(STATUSES),
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
  message_thread_id: Schema.NullOr(Int8),
  input_file_ids: Schema.NullOr(Schema.Array(Schema.String)),
  input_urls: Schema.NullOr(Schema.Array(Schema.String)),
  media_group_id: Schema.NullOr(Schema.String),
  created_at: Schema.Unknown,
  deadline_at: Schema.Unknown,
  submitted_at: Schema.Unknown,
  completed_at: Schema.Unknown,
  notified_at: Schema.Unknown,
  updated_at: Schema.Unknown
})

/** One generation, as the chat flow and the engine see it. */
export interface Generation {
  readonly id: string
  readonly userId: number
  readonly chatId: number
  readonly lang: Lang
  readonly prompt: string
  readonly aspectRatio: AspectRatio
  /** The Kie model id (`kie/ModelCatalog.ts`) it is made with; "🔁" and "🔄" keep it. */
  readonly model: string
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
  /** The forum topic it was asked in: every message about it goes there (`message_thread_id`). */
  readonly threadId: number | null
  /** An edit's pictures as Telegram files (largest size); empty for text-to-image. */
  readonly inputFileIds: ReadonlyArray<string>
  /**
   * Where Kie fetches an edit's pictures: `null` while the upload of
   * `inputFileIds` is still to do (a stored step: a failover resumes after it).
   */
  readonly inputUrls: ReadonlyArray<string> | null
  /** The album an edit's photos came in: its later photos join the row until the upload. */
  readonly mediaGroupId: string | null
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
  model: row.model,
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
  threadId: row.message_thread_id,
  inputFileIds: row.input_file_ids ?? [],
  inputUrls: row.input_urls,
  mediaGroupId: row.media_group_id,
  // Written by us from the Clock; an unreadable value would be a bug, and
  // epoch 0 makes such a row look overdue rather than immortal.
  createdAt: Option.getOrElse(UtcTime.fromUnknown(row.created_at), () => DateTime.makeUnsafe(0)),
  deadlineAt: Option.getOrElse(UtcTime.fromUnknown(row.deadline_at), () => DateTime.makeUnsafe(0)),
  submittedAt: UtcTime.fromUnknown(row.submitted_at),
  completedAt: UtcTime.fromUnknown(row.completed_at),
  notifiedAt: UtcTime.fromUnknown(row.notified_at),
  updatedAt: Option.getOrElse(UtcTime.fromUnknown(row.updated_at), () => DateTime.makeUnsafe(0))
})

/** Whole rows to `Generation`s. A row that does not decode is a defect (we wrote it). */
export const decodeRows = (rows: ReadonlyArray<unknown>): Effect.Effect<ReadonlyArray<Generation>> =>
  Schema.decodeUnknownEffect(Schema.Array(Row))(rows).pipe(
    Effect.map((decoded) => decoded.map(toGeneration)),
    Effect.orDie
  )

/** The first of some rows, if any. */
export const first = (rows: ReadonlyArray<Generation>): Option.Option<Generation> => Option.fromNullishOr(rows[0])

/** A timestamp as a statement parameter. */
export const asDate = (dt: DateTime.Utc): Date => DateTime.toDateUtc(dt)

/** Whether an `UPDATE ... RETURNING id` touched a row. */
export const updated = <E, R>(statement: Effect.Effect<ReadonlyArray<unknown>, E, R>) =>
  Effect.map(statement, (rows) => rows.length > 0)
