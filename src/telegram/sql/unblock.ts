/** Clearing the blocked flag of chats. */
import { Effect } from "effect"
import type { SqlClient } from "effect/sql/SqlClient"
import { int8Array } from "../../database/SqlColumns.ts"

/** Clears `blocked_at` of those of `chatIds` that had one; returns the ids that changed. */
export const unblock = (sql: SqlClient, chatIds: ReadonlyArray<number>, at: Date) =>
  sql<{ chat_id: bigint }>`
    UPDATE telegram_chats SET blocked_at = NULL, blocked_reason = NULL, updated_at = ${at}
    WHERE chat_id = ANY(${int8Array(chatIds)}) AND blocked_at IS NOT NULL
    RETURNING chat_id`.pipe(Effect.map((rows) => rows.map((row) => Number(row.chat_id))))

/** A chat an update came from, and when that update arrived. */
export interface Arrival {
  readonly chatId: number
  readonly arrivedAt: Date
}

/**
 * Clears `blocked_at` of the chats in `arrivals` where it was set before
 * their update arrived (a flag set later, e.g. by a 403 while that update was
 * being handled, stays); returns the ids that changed.
 *
 * The `= ANY` beside the join lets the planner find the chats by their
 * primary key: with the join alone it guesses 100 rows for the JSON's
 * records and reads the whole table (see `ChatSessions.getMany`).
 */
export const unblockArrived = (sql: SqlClient, arrivals: ReadonlyArray<Arrival>, at: Date) => {
  const latest = new Map<number, Date>()
  for (const { arrivedAt, chatId } of arrivals) {
    const seen = latest.get(chatId)
    if (seen === undefined || seen < arrivedAt) latest.set(chatId, arrivedAt)
  }
  const rows = JSON.stringify([...latest].map(([chatId, arrivedAt]) => ({
    chat_id: chatId,
    arrived_at: arrivedAt.toISOString()
  })))
  return sql<{ chat_id: bigint }>`
    UPDATE telegram_chats c SET blocked_at = NULL, blocked_reason = NULL, updated_at = ${at}
    FROM jsonb_to_recordset(${rows}::jsonb) AS a(chat_id bigint, arrived_at timestamptz)
    WHERE c.chat_id = ANY(${int8Array(latest.keys())}) AND c.chat_id = a.chat_id
      AND c.blocked_at IS NOT NULL AND c.blocked_at < a.arrived_at
    RETURNING c.chat_id`.pipe(Effect.map((rows) => rows.map((row) => Number(row.chat_id))))
}
