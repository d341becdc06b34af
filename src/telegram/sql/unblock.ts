/** Clearing the blocked flag of chats. */
import { Effect } from "effect"
import type { SqlClient } from "effect/sql/SqlClient"

/** Clears `blocked_at` of those of `chatIds` that had one; returns the ids that changed. */
export const unblock = (sql: SqlClient, chatIds: ReadonlyArray<number>, at: Date) =>
  sql<{ chat_id: bigint }>`
    UPDATE telegram_chats SET blocked_at = NULL, blocked_reason = NULL, updated_at = ${at}
    WHERE chat_id = ANY(${chatIds}) AND blocked_at IS NOT NULL
    RETURNING chat_id`.pipe(Effect.map((rows) => rows.map((row) => Number(row.chat_id))))
