/**
 * Finishing claimed updates: `done` or `dead`, both stamped `processed_at`
 * (retention counts from it).
 *
 * Gotchas: every write is guarded by `claimed_by`, so a deposed leader
 * cannot finish a row another term owns now; the result says whether the
 * row was still this term's.
 *
 * The status check is written `(status = 'processing') IS TRUE`, here and in
 * every statement of the inbox that finds its rows by `update_id` (claim,
 * retry, release). It means the same (the column is NOT NULL), but the
 * planner cannot prove a partial index's predicate from it, so it looks the
 * rows up by primary key. From `status = 'processing'` it may scan a partial
 * index of processing rows instead, and it does whenever the statistics say
 * that index is nearly empty: on a busy inbox rows are processing for
 * milliseconds, so ANALYZE mostly sees few, while a backlog can hold
 * thousands. Each finish then read all of them (measured: 0.97 ms per finish
 * statement at 1,000 `/start`s a second, the database's costliest).
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
      WHERE update_id = ANY(${int8Array(updateIds)}) AND (status = 'processing') IS TRUE AND claimed_by = ${term}
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
      WHERE update_id = ${updateId} AND (status = 'processing') IS TRUE AND claimed_by = ${term}
      RETURNING update_id`
    return rows.length > 0
  })
