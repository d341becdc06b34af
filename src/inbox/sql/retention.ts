/**
 * Retention: finished rows (`done`, `dead`) are deleted in batches once they
 * are older than INBOX_RETENTION_HOURS; unfinished rows are never deleted.
 */
import { DateTime, Effect } from "effect"
import type { SqlClient } from "effect/sql/SqlClient"
import type { SqlError } from "effect/sql/SqlError"

/** Deletes up to `limit` finished rows processed before `before`; returns how many. */
export const purgeFinished = (
  sql: SqlClient,
  before: DateTime.Utc,
  limit: number
): Effect.Effect<number, SqlError> =>
  sql`
    DELETE FROM telegram_updates WHERE update_id IN (
      SELECT update_id FROM telegram_updates
      WHERE status IN ('done', 'dead') AND processed_at < ${DateTime.toDateUtc(before)}
      LIMIT ${limit}
    )
    RETURNING update_id`.pipe(Effect.map((rows) => rows.length))
