/**
 * Claiming pending updates for a leadership term.
 *
 * Details: rows are taken in `update_id` order with `FOR UPDATE SKIP LOCKED`,
 * and a claim counts an attempt. A pending row is claimable only while no row
 * of its chat is `processing` under another term, so a chat's order survives
 * failover: its later updates wait until the reconciler hands the dead
 * leader's row back.
 */
import { type DateTime, Effect, type Option, Schema } from "effect"
import type { SqlClient } from "effect/sql/SqlClient"
import type { SqlError } from "effect/sql/SqlError"
import { Int8 } from "../../database/SqlColumns.ts"
import { decodeRows, now, timestamp } from "./rows.ts"

/** An update this leadership term now owns. */
export interface ClaimedUpdate {
  readonly updateId: number
  readonly chatId: number | null
  readonly kind: string
  readonly payload: unknown
  /** Handler runs started so far, this one included. */
  readonly attempts: number
  /** `None` if the stored value could not be read (never expected). */
  readonly receivedAt: Option.Option<DateTime.Utc>
}

const ClaimedRow = Schema.Struct({
  update_id: Int8,
  chat_id: Schema.NullOr(Int8),
  kind: Schema.String,
  payload: Schema.Unknown,
  attempts: Schema.Int,
  received_at: Schema.Unknown
})

/**
 * Claims up to `limit` pending updates in `update_id` order for `term`,
 * skipping chats with an update still `processing` under another term.
 */
export const claim = (
  sql: SqlClient,
  term: string,
  limit: number
): Effect.Effect<ReadonlyArray<ClaimedUpdate>, SqlError> =>
  Effect.gen(function*() {
    const claimedAt = yield* now
    const rows = yield* sql`
      WITH candidates AS (
        SELECT t.update_id
        FROM telegram_updates t
        WHERE t.status = 'pending'
          AND NOT EXISTS (
            SELECT 1 FROM telegram_updates p
            WHERE p.status = 'processing' AND p.chat_id = t.chat_id AND p.claimed_by IS DISTINCT FROM ${term}
          )
        ORDER BY t.update_id
        LIMIT ${limit}
        FOR UPDATE SKIP LOCKED
      )
      UPDATE telegram_updates u
      SET status = 'processing', claimed_at = ${claimedAt}, claimed_by = ${term}, attempts = u.attempts + 1
      FROM candidates c
      WHERE u.update_id = c.update_id
      RETURNING u.update_id, u.chat_id, u.kind, u.payload, u.attempts, u.received_at`.pipe(
      Effect.flatMap(decodeRows(ClaimedRow))
    )
    return rows
      .map((row): ClaimedUpdate => ({
        updateId: row.update_id,
        chatId: row.chat_id,
        kind: row.kind,
        payload: row.payload,
        attempts: row.attempts,
        receivedAt: timestamp(row.received_at)
      }))
      .sort((a, b) => a.updateId - b.updateId)
  })
