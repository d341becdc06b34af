/**
 * Taking back rows stuck on another term (a dead or deposed leader): the
 * reconciler returns them to `pending` so the chat goes on in order.
 */
import { DateTime, Effect, type Option, Schema } from "effect"
import type { SqlClient } from "effect/sql/SqlClient"
import type { SqlError } from "effect/sql/SqlError"
import { Int8 } from "../../database/SqlColumns.ts"
import { decodeRows, timestamp } from "./rows.ts"

/** A row taken back from the term that held it. */
export interface StuckUpdate {
  readonly updateId: number
  readonly claimedBy: string | null
  readonly claimedAt: Option.Option<DateTime.Utc>
}

const StuckRow = Schema.Struct({
  update_id: Int8,
  claimed_by: Schema.NullOr(Schema.String),
  claimed_at: Schema.Unknown
})

/**
 * Returns to `pending` up to `limit` rows `processing` under any term but
 * `term` whose claim is older than `claimedBefore` (or has no claim time);
 * reports them in `update_id` order with who held them since when.
 */
export const requeueStuck = (
  sql: SqlClient,
  term: string,
  claimedBefore: DateTime.Utc,
  limit: number
): Effect.Effect<ReadonlyArray<StuckUpdate>, SqlError> =>
  sql`
    WITH stuck AS (
      SELECT update_id, claimed_by, claimed_at FROM telegram_updates
      WHERE status = 'processing' AND claimed_by IS DISTINCT FROM ${term}
        AND (claimed_at IS NULL OR claimed_at < ${DateTime.toDateUtc(claimedBefore)})
      ORDER BY update_id
      LIMIT ${limit}
      FOR UPDATE SKIP LOCKED
    )
    UPDATE telegram_updates u
    SET status = 'pending', claimed_at = NULL, claimed_by = NULL
    FROM stuck s
    WHERE u.update_id = s.update_id
    RETURNING s.update_id, s.claimed_by, s.claimed_at`.pipe(
    Effect.flatMap(decodeRows(StuckRow)),
    Effect.map((rows) =>
      rows
        .map((row): StuckUpdate => ({
          updateId: row.update_id,
          claimedBy: row.claimed_by,
          claimedAt: timestamp(row.claimed_at)
        }))
        .sort((a, b) => a.updateId - b.updateId)
    )
  )
