/** Clearing the blocked flag of chats. */
import { Effect } from "effect"
import type { SqlClient } from "effect/sql/SqlClient"
import type { Fragment } from "effect/sql/Statement"

/** Clears `blocked_at` of those of `chatIds` that had one; returns the ids that changed. */
export const unblock = (sql: SqlClient, chatIds: ReadonlyArray<number>, at: Date) =>
  sql<{ chat_id: bigint }>`
    UPDATE telegram_chats SET blocked_at = NULL, blocked_reason = NULL, updated_at = ${at}
    WHERE chat_id = ANY(${chatIds}) AND blocked_at IS NOT NULL
    RETURNING chat_id`.pipe(Effect.map((rows) => rows.map((row) => Number(row.chat_id))))

/** A chat an update came from, which update, and when that update arrived. */
export interface Arrival {
  readonly updateId: number
  readonly chatId: number
  readonly arrivedAt: Date
}

/**
 * Clears `blocked_at` of the chats of those `arrivals` whose update is in
 * `updates` (a relation with an `update_id` column: the updates just
 * finished), where the flag was set before the update arrived (a flag set
 * later, e.g. by a 403 while that update was being handled, stays). Of two
 * arrivals from one chat any that clears it will do: the test is "set
 * before some finished update of the chat arrived". Returns the chats it
 * changed (`RETURNING chat_id`).
 */
export const unblockArrivedAmong = (
  sql: SqlClient,
  arrivals: ReadonlyArray<Arrival>,
  at: Date,
  updates: Fragment
): Fragment => {
  const rows = JSON.stringify(arrivals.map(({ arrivedAt, chatId, updateId }) => ({
    update_id: updateId,
    chat_id: chatId,
    arrived_at: arrivedAt.toISOString()
  })))
  return sql`
    UPDATE telegram_chats c SET blocked_at = NULL, blocked_reason = NULL, updated_at = ${at}
    FROM jsonb_to_recordset(${rows}::jsonb) AS a(update_id bigint, chat_id bigint, arrived_at timestamptz)
    WHERE a.update_id IN (SELECT update_id FROM ${updates})
      AND c.chat_id = a.chat_id AND c.blocked_at IS NOT NULL AND c.blocked_at < a.arrived_at
    RETURNING c.chat_id`
}
