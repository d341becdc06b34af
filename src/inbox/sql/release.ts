/**
 * Handing a term's rows back on a graceful shutdown, once its fibers have
 * stopped: everything still `processing` under the term becomes `pending`.
 */
import { Effect } from "effect"
import type { SqlClient } from "effect/sql/SqlClient"
import type { SqlError } from "effect/sql/SqlError"
import { int8Array } from "../../database/SqlColumns.ts"

/**
 * Hands every row still `processing` under `term` back to `pending`. Rows not
 * in `started` get their claim's attempt back: they were claimed, never run.
 * Returns how many rows went back.
 */
export const release = (
  sql: SqlClient,
  term: string,
  started: ReadonlyArray<number>
): Effect.Effect<number, SqlError> =>
  sql`
    UPDATE telegram_updates
    SET status = 'pending', claimed_at = NULL, claimed_by = NULL,
        attempts = GREATEST(attempts - CASE WHEN update_id = ANY(${int8Array(started)}) THEN 0 ELSE 1 END, 0)
    WHERE status = 'processing' AND claimed_by = ${term}
    RETURNING update_id`.pipe(Effect.map((rows) => rows.length))
