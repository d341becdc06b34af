/**
 * Retention: finished rows (`done`, `dead`) are deleted in batches once they
 * are older than INBOX_RETENTION_HOURS; unfinished rows are never deleted.
 */
import { DateTime, Effect } from "effect"
import type { SqlClient } from "effect/sql/SqlClient"
import type { SqlError } from "effect/sql/SqlError"

/**
 * Deletes up to `limit` finished rows processed before `before`; returns how many.
 *
 * Why one read per status: the index `telegram_updates_finished` is on
 * `(status, processed_at)` for exactly the `done` and `dead` rows, so the
 * planner drops `status IN ('done', 'dead')` as implied and scans with
 * `processed_at` alone, which as the second column bounds nothing: every
 * pass (every reconciler sweep) read the whole index, all the retention
 * period's rows, to find none. With `status = …` each read starts at its
 * first old row. `= ANY(ARRAY(…))` makes the delete find its rows by
 * primary key; with `IN (…)` the planner may hash the whole table.
 */
export const purgeFinished = (
  sql: SqlClient,
  before: DateTime.Utc,
  limit: number
): Effect.Effect<number, SqlError> => {
  const cutoff = DateTime.toDateUtc(before)
  return sql`
    DELETE FROM telegram_updates WHERE update_id = ANY(ARRAY(
      SELECT update_id FROM (
        (SELECT update_id FROM telegram_updates WHERE status = 'done' AND processed_at < ${cutoff} LIMIT ${limit})
        UNION ALL
        (SELECT update_id FROM telegram_updates WHERE status = 'dead' AND processed_at < ${cutoff} LIMIT ${limit})
      ) finished
      LIMIT ${limit}
    ))
    AND status IN ('done', 'dead') AND processed_at < ${cutoff}
    RETURNING update_id`.pipe(Effect.map((rows) => rows.length))
}
