/**
 * Retention: finished generations (delivered or failed) created before a
 * cutoff are deleted in batches, with their prompts, chat ids and result
 * URLs. Unfinished rows are never touched, whatever their age.
 *
 * Gotchas: the cutoff must lie before 00:00 UTC today (retention is at least a
 * day), so the daily limits, which count today's rows, never lose one.
 */
import { type DateTime, Effect } from "effect"
import type { SqlClient } from "effect/sql/SqlClient"
import type { SqlError } from "effect/sql/SqlError"
import { asDate } from "./row.ts"

/**
 * Deletes up to `limit` finished generations created before `before`, oldest first; returns how many.
 *
 * `= ANY(ARRAY(…))`, not `IN (…)`: with a batch of a thousand the planner
 * turned `IN` into a hash join over the whole table (35 ms at 100,000
 * generations, growing with it); the array makes it find the batch by
 * primary key. The conditions are repeated outside so that a row changed
 * meanwhile is checked again.
 */
export const purgeFinished = (
  sql: SqlClient,
  before: DateTime.Utc,
  limit: number
): Effect.Effect<number, SqlError> =>
  sql`
    DELETE FROM generations WHERE id = ANY(ARRAY(
      SELECT id FROM generations
      WHERE created_at < ${asDate(before)} AND status IN ('delivered', 'failed')
      ORDER BY created_at
      LIMIT ${limit}
    ))
    AND created_at < ${asDate(before)} AND status IN ('delivered', 'failed')
    RETURNING id`.pipe(Effect.map((rows) => rows.length))
