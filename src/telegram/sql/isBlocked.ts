/** Whether a chat is recorded as blocked. */
import { Effect } from "effect"
import type { SqlClient } from "effect/sql/SqlClient"

/** True while `telegram_chats` has the chat with a `blocked_at`. */
export const isBlocked = (sql: SqlClient, chatId: number) =>
  sql<{ blocked: boolean }>`
    SELECT blocked_at IS NOT NULL AS blocked FROM telegram_chats WHERE chat_id = ${chatId}`.pipe(
    Effect.map((rows) => rows[0]?.blocked === true)
  )
