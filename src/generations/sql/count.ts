/** Counts for `/health`, `/metrics` and the Kie rate budget. */
import { type DateTime, Effect, Option } from "effect"
import type { SqlClient } from "effect/sql/SqlClient"
import * as UtcTime from "../../platform/UtcTime.ts"
import { asDate, unfinished, type UNFINISHED_STATUSES } from "./row.ts"

/** Unfinished generations by status. */
export type GenerationCounts = { readonly [S in typeof UNFINISHED_STATUSES[number]]: number }

/** Generations a user is waiting for: not yet delivered or failed. */
export const inFlight = (sql: SqlClient) =>
  sql<{ n: bigint }>`SELECT count(*) AS n FROM generations WHERE status IN (${unfinished})`.pipe(
    Effect.map((rows) => Number(rows[0]?.n ?? 0))
  )

/** Unfinished generations by status (0 for a status without any). */
export const counts = (sql: SqlClient) =>
  sql<{ status: string; n: bigint }>`
    SELECT status, count(*) AS n FROM generations WHERE status IN (${unfinished}) GROUP BY status`.pipe(
    Effect.map((rows): GenerationCounts => {
      const by = new Map(rows.map((r) => [r.status, Number(r.n)]))
      return {
        queued: by.get("queued") ?? 0,
        submitting: by.get("submitting") ?? 0,
        submitted: by.get("submitted") ?? 0,
        succeeded: by.get("succeeded") ?? 0
      }
    })
  )

/** When createTask requests were last sent, for those sent after `since` (by any instance). */
export const sentSince = (sql: SqlClient, since: DateTime.Utc) =>
  sql<{ submitted_at: unknown }>`
    SELECT submitted_at FROM generations WHERE submitted_at > ${asDate(since)} ORDER BY submitted_at`.pipe(
    Effect.map((rows) => rows.flatMap((row) => Option.toArray(UtcTime.fromUnknown(row.submitted_at))))
  )

/**
 * Generations created at or after `since` that did not fail: what the global
 * daily budget counts (`since` = 00:00 UTC today). Uses `generations_created`.
 */
export const countSince = (sql: SqlClient, since: DateTime.Utc) =>
  sql<{ n: bigint }>`
    SELECT count(*) AS n FROM generations WHERE created_at >= ${asDate(since)} AND status <> 'failed'`.pipe(
    Effect.map((rows) => Number(rows[0]?.n ?? 0))
  )
