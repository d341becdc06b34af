/**
 * Reading stored callbacks: one task's, or many tasks' at once (for a batch
 * poller). Only rows with a callback count; a row that does not decode is
 * treated as having none (polling covers for it).
 */
import { Effect, Option, Result, Schema } from "effect"
import type { SqlClient } from "effect/sql/SqlClient"
import type { SqlError } from "effect/sql/SqlError"

/** The callback stored for a task. */
export interface StoredCallback {
  readonly taskId: string
  readonly state: "success" | "fail"
  /** The callback's `data` (recordInfo-shaped); decode with `KieSchema.decodeRecordData`. */
  readonly data: unknown
  /** Signed with the HMAC key, or carrying the task's ref. Untrusted ones are hints only. */
  readonly trusted: boolean
  /** Callbacks received for the task, repeats included. */
  readonly count: number
  readonly receivedAtMillis: number
}

/** A row of `selectStored`. */
const StoredRow = Schema.Struct({
  task_id: Schema.String,
  callback_state: Schema.Literals(["success", "fail"]),
  callback_data: Schema.Unknown,
  callback_trusted: Schema.Boolean,
  callback_count: Schema.Finite,
  received_ms: Schema.Finite
})

const toStored = (row: unknown): Option.Option<StoredCallback> => {
  const decoded = Schema.decodeUnknownResult(StoredRow)(row)
  if (Result.isFailure(decoded)) return Option.none()
  const r = decoded.success
  return Option.some({
    taskId: r.task_id,
    state: r.callback_state,
    data: r.callback_data,
    trusted: r.callback_trusted,
    count: r.callback_count,
    receivedAtMillis: r.received_ms
  })
}

/** The rows of `taskIds` that have a callback. */
const selectStored = (sql: SqlClient, taskIds: ReadonlyArray<string>) => {
  const which = taskIds.length === 1 ? sql`task_id = ${taskIds[0]!}` : sql`task_id IN ${sql.in(taskIds)}`
  return sql`
    SELECT task_id, callback_state, callback_data, callback_trusted, callback_count,
           (extract(epoch from callback_received_at) * 1000)::float8 AS received_ms
    FROM kie_tasks WHERE ${which} AND callback_state IS NOT NULL
  `
}

/** The stored callback of `taskId`, if any. */
export const lookup = (sql: SqlClient, taskId: string): Effect.Effect<Option.Option<StoredCallback>, SqlError> =>
  Effect.map(selectStored(sql, [taskId]), (rows) => (rows.length === 0 ? Option.none() : toStored(rows[0])))

/** The stored callbacks of `taskIds`, by task id (tasks without one are missing). */
export const lookupMany = (
  sql: SqlClient,
  taskIds: ReadonlyArray<string>
): Effect.Effect<ReadonlyMap<string, StoredCallback>, SqlError> =>
  taskIds.length === 0
    ? Effect.succeed(new Map<string, StoredCallback>())
    : Effect.map(selectStored(sql, taskIds), (rows) => {
      const found = new Map<string, StoredCallback>()
      for (const row of rows) {
        const stored = toStored(row)
        if (Option.isSome(stored)) found.set(stored.value.taskId, stored.value)
      }
      return found
    })
