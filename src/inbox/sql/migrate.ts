/**
 * The `telegram_updates` table (migration 0001) and the partial indexes its
 * hot statements use. Never edit it once applied: add a migration.
 */
import { ddl } from "../../database/SqlColumns.ts"

/** Migration 0001: the inbox table and the partial indexes its hot queries use. */
export const migration = ddl(
  `
    CREATE TABLE telegram_updates (
      update_id bigint PRIMARY KEY,
      chat_id bigint,
      user_id bigint,
      kind text NOT NULL,
      payload jsonb NOT NULL,
      received_at timestamptz NOT NULL,
      status text NOT NULL DEFAULT 'pending'
        CHECK (status IN ('pending', 'processing', 'done', 'dead')),
      attempts integer NOT NULL DEFAULT 0,
      claimed_at timestamptz,
      claimed_by text,
      processed_at timestamptz,
      last_error text
    )`,
  // Claims (in update_id order) and queue_depth.
  `
    CREATE INDEX telegram_updates_unfinished ON telegram_updates (update_id)
    WHERE status IN ('pending', 'processing')`,
  // "Is an earlier update of this chat still being processed elsewhere?"
  `
    CREATE INDEX telegram_updates_processing_chat ON telegram_updates (chat_id)
    WHERE status = 'processing'`,
  // Orphan detection and the oldest pending age.
  `
    CREATE INDEX telegram_updates_pending_received ON telegram_updates (received_at)
    WHERE status = 'pending'`,
  // Retention and dead counts.
  `
    CREATE INDEX telegram_updates_finished ON telegram_updates (status, processed_at)
    WHERE status IN ('done', 'dead')`
)
