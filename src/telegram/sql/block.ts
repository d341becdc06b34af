/** Recording a chat as blocked. */
import type { SqlClient } from "effect/sql/SqlClient"

/** Sets (or refreshes) the chat's `blocked_at` and Telegram's description of why. */
export const block = (sql: SqlClient, chatId: number, reason: string, at: Date) => sql`
    INSERT INTO telegram_chats (chat_id, blocked_at, blocked_reason, updated_at)
    VALUES (${chatId}, ${at}, ${reason}, ${at})
    ON CONFLICT (chat_id) DO UPDATE
      SET blocked_at = EXCLUDED.blocked_at, blocked_reason = EXCLUDED.blocked_reason, updated_at = EXCLUDED.updated_at`
