/** The engine's sweeps: generations in a given state that need something done. */
import { DateTime, Duration, Effect } from "effect"
import type { SqlClient } from "effect/sql/SqlClient"
import { asDate, decodeRows, type GenerationStatus, unfinished } from "./row.ts"

/** Generations in `status`, oldest first. */
export const withStatus = (sql: SqlClient, status: GenerationStatus, limit: number) =>
  sql`SELECT * FROM generations WHERE status = ${status} ORDER BY created_at, id LIMIT ${limit}`.pipe(
    Effect.flatMap(decodeRows)
  )

/** Failed generations whose user was not told yet. */
export const failedUnnotified = (sql: SqlClient, limit: number) =>
  sql`SELECT * FROM generations WHERE status = 'failed' AND notified_at IS NULL ORDER BY id LIMIT ${limit}`.pipe(
    Effect.flatMap(decodeRows)
  )

/**
 * Unfinished generations whose deadline has passed; `succeeded` ones only
 * once `succeededGrace` more has passed (their picture exists and is paid for).
 */
export const overdue = (sql: SqlClient, limit: number, succeededGrace: Duration.Duration = Duration.zero) =>
  Effect.flatMap(DateTime.now, (at) =>
    sql`SELECT * FROM generations
        WHERE (status IN ('queued', 'submitting', 'submitted') AND deadline_at <= ${asDate(at)})
           OR (status = 'succeeded' AND deadline_at <= ${asDate(DateTime.subtractDuration(at, succeededGrace))})
        ORDER BY deadline_at LIMIT ${limit}`.pipe(Effect.flatMap(decodeRows)))

/** Finished generations whose status message still shows progress (delivered, or failed and told). */
export const openStatusMessages = (sql: SqlClient, limit: number) =>
  sql`SELECT * FROM generations
      WHERE status IN ('delivered', 'failed') AND status_message_id IS NOT NULL
        AND (status = 'delivered' OR notified_at IS NOT NULL)
      ORDER BY id LIMIT ${limit}`.pipe(Effect.flatMap(decodeRows))

/** Unfinished generations with a status message last edited at or before `editedBefore`, least recent first. */
export const statusesToRefresh = (sql: SqlClient, editedBefore: DateTime.Utc, limit: number) =>
  sql`SELECT * FROM generations
      WHERE status IN (${unfinished}) AND status_message_id IS NOT NULL
        AND (status_edited_at IS NULL OR status_edited_at <= ${asDate(editedBefore)})
      ORDER BY status_edited_at NULLS FIRST, id LIMIT ${limit}`.pipe(Effect.flatMap(decodeRows))
