/**
 * Retrying a claimed update: a failed run's error is recorded and the row
 * stays `processing` under this term; the next run counts another attempt
 * (attempts are counted in the row, so they survive restarts).
 *
 * Gotchas: guarded by `claimed_by` like every write after a claim; the
 * result says whether the row was still this term's. The status check is
 * written `IS TRUE` to keep the lookup on the primary key (`sql/finish.ts`).
 */
import { Effect } from "effect"
import type { SqlClient } from "effect/sql/SqlClient"
import type { SqlError } from "effect/sql/SqlError"
import { now } from "./rows.ts"

/** Records a failed attempt's error; the row stays `processing`. */
export const recordFailure = (
  sql: SqlClient,
  term: string,
  updateId: number,
  error: string
): Effect.Effect<boolean, SqlError> =>
  sql`
    UPDATE telegram_updates SET last_error = ${error}
    WHERE update_id = ${updateId} AND (status = 'processing') IS TRUE AND claimed_by = ${term}
    RETURNING update_id`.pipe(Effect.map((rows) => rows.length > 0))

/** Counts the start of another attempt (after a backoff) and stamps its claim time. */
export const beginAttempt = (
  sql: SqlClient,
  term: string,
  updateId: number
): Effect.Effect<boolean, SqlError> =>
  Effect.gen(function*() {
    const claimedAt = yield* now
    const rows = yield* sql`
      UPDATE telegram_updates SET attempts = attempts + 1, claimed_at = ${claimedAt}
      WHERE update_id = ${updateId} AND (status = 'processing') IS TRUE AND claimed_by = ${term}
      RETURNING update_id`
    return rows.length > 0
  })
