/**
 * The DDL of the Telegram client's two tables: `telegram_chats` (chats that
 * blocked the bot, see `BlockedChats.ts`) and `telegram_webhook` (the applied
 * webhook's fingerprint, see `WebhookFingerprint.ts`).
 *
 * Gotchas: an applied migration never changes; add a new one.
 */
import { ddl } from "../../database/SqlColumns.ts"

/** Migration 0002: chats that blocked the bot, and the applied webhook's fingerprint. */
export const migration = ddl(
  `CREATE TABLE telegram_chats (
    chat_id bigint PRIMARY KEY,
    blocked_at timestamptz,
    blocked_reason text,
    updated_at timestamptz NOT NULL
  )`,
  `CREATE TABLE telegram_webhook (
    id smallint PRIMARY KEY CHECK (id = 1),
    fingerprint text NOT NULL,
    set_at timestamptz NOT NULL
  )`
)
