/** When `submitted` generations are next asked about at Kie (`next_poll_at`). */
import { DateTime, Effect, Option } from "effect"
import type { SqlClient } from "effect/sql/SqlClient"
import * as UtcTime from "../../platform/UtcTime.ts"
import { asDate, decodeRows } from "./row.ts"

/** Sets the next poll of a `submitted` generation (no-op once it moved on). */
export const schedulePoll = (sql: SqlClient, id: string, at: DateTime.Utc) =>
  sql`UPDATE generations SET next_poll_at = ${asDate(at)} WHERE id = ${id}::bigint AND status = 'submitted'`.pipe(
    Effect.asVoid
  )

/** `submitted` generations whose next poll is due, soonest first. */
export const dueForPolling = (sql: SqlClient, limit: number, excluding: ReadonlyArray<string> = []) =>
  Effect.flatMap(
    DateTime.now,
    (at) =>
      sql`SELECT * FROM generations WHERE status = 'submitted' AND next_poll_at <= ${asDate(at)}
          AND NOT (id::text = ANY(${excluding}))
        ORDER BY next_poll_at LIMIT ${limit}`.pipe(Effect.flatMap(decodeRows))
  )

/** When the next poll of a `submitted` generation (other than `excluding`) is due. */
export const nextPollAt = (sql: SqlClient, excluding: ReadonlyArray<string>) =>
  sql<{ at: unknown }>`
    SELECT next_poll_at AS at FROM generations
    WHERE status = 'submitted' AND next_poll_at IS NOT NULL AND NOT (id::text = ANY(${excluding}))
    ORDER BY next_poll_at LIMIT 1`.pipe(
    Effect.map((rows): Option.Option<DateTime.Utc> =>
      rows.length === 0 ? Option.none() : UtcTime.fromUnknown(rows[0]!.at)
    )
  )
