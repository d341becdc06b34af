/**
 * Handing a term's rows back to `pending`: on a graceful shutdown, once its
 * fibers have stopped, everything still `processing` under the term
 * (`release`); and the rows a store may have claimed for the term when the
 * store's statement failed, so nobody heard of them (`releaseClaimed`).
 *
 * Gotchas: `releaseClaimed` writes its status check `IS TRUE` to keep the
 * lookup on the primary key (`sql/finish.ts`).
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

/**
 * Hands the rows of `updateIds` still `processing` under `term` back to
 * `pending` with their claim's attempt given back: rows a failed store may
 * have claimed on storing (`sql/store.ts`) and nobody runs. Returns how many
 * went back (none if the statement never committed them).
 */
export const releaseClaimed = (
  sql: SqlClient,
  term: string,
  updateIds: ReadonlyArray<number>
): Effect.Effect<number, SqlError> =>
  sql`
    UPDATE telegram_updates
    SET status = 'pending', claimed_at = NULL, claimed_by = NULL, attempts = GREATEST(attempts - 1, 0)
    WHERE update_id = ANY(${int8Array(updateIds)}) AND (status = 'processing') IS TRUE AND claimed_by = ${term}
    RETURNING update_id`.pipe(Effect.map((rows) => rows.length))
