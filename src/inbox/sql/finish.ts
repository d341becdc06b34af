/**
 * Finishing claimed updates: `done` or `dead`, both stamped `processed_at`
 * (retention counts from it).
 *
 * Gotchas: every write is guarded by `claimed_by`, so a deposed leader
 * cannot finish a row another term owns now; the result says whether the
 * row was still this term's.
 */
import { Effect } from "effect"
import type { SqlClient } from "effect/sql/SqlClient"
import type { SqlError } from "effect/sql/SqlError"
import { now } from "./rows.ts"
import { int8Array } from "../../database/SqlColumns.ts"

/** Marks finished (`done`) updates this term owns; returns the ids it still owned. */
export const complete = (
  sql: SqlClient,
  term: string,
  updateIds: ReadonlyArray<number>
): Effect.Effect<ReadonlySet<number>, SqlError> =>
  updateIds.length === 0 ? Effect.succeed(new Set<number>()) : Effect.gen(function*() {
    const processedAt = yield* now
    const rows = yield* sql<{ update_id: number | string | bigint }>`
      UPDATE telegram_updates
      SET status = 'done', processed_at = ${processedAt}, claimed_at = NULL
      WHERE update_id = ANY(${int8Array(updateIds)}) AND status = 'processing' AND claimed_by = ${term}
      RETURNING update_id`
    return new Set(rows.map((row) => Number(row.update_id)))
  })

/** Marks an update this term owns `dead` with its error; tells whether the term still owned it. */
export const markDead = (
  sql: SqlClient,
  term: string,
  updateId: number,
  error: string
): Effect.Effect<boolean, SqlError> =>
  Effect.gen(function*() {
    const processedAt = yield* now
    const rows = yield* sql`
      UPDATE telegram_updates
      SET status = 'dead', last_error = ${error}, processed_at = ${processedAt}, claimed_at = NULL
      WHERE update_id = ${updateId} AND status = 'processing' AND claimed_by = ${term}
      RETURNING update_id`
    return rows.length > 0
  })
