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

/**
 * Migration 0012: the two reads of a claim as functions that read with plain
 * index scans: `inbox_pending_window(max_rows)`, the earliest pending rows in
 * `update_id` order, and `inbox_processing_rows()`, the rows in
 * `processing` with a chat.
 *
 * Why functions: each row that was ever pending or processing leaves a dead
 * entry in the partial indexes until VACUUM. The planner read them with
 * bitmap scans, which visit every dead entry's heap page on every claim and
 * never mark the entries dead: at 1,000 updates a second the claim grew by
 * about 0.4 ms per 1,000 updates handled (12 ms after 30,000) until
 * autovacuum came round, and the dispatcher fell behind. A plain index scan
 * marks a dead entry the first time it meets it, and later scans step over it
 * without reading the heap (0.4 ms a claim up to 30,000 handled updates on
 * PostgreSQL 15). Stepping over marked entries still costs a little until
 * VACUUM frees their pages (`docs/benchmarks.md` measures it). The planner
 * picks that scan only with bitmap and sequential scans off, which a
 * function's `SET` clauses do for its own statement and nothing else.
 */
export const migrationClaimReads = ddl(
  `
    CREATE FUNCTION inbox_pending_window(max_rows integer)
    RETURNS TABLE (update_id bigint, chat_id bigint)
    LANGUAGE sql STABLE
    SET enable_bitmapscan = off
    SET enable_seqscan = off
    AS $$
      SELECT t.update_id, t.chat_id FROM telegram_updates t
      WHERE t.status = 'pending'
      ORDER BY t.update_id
      LIMIT max_rows
    $$`,
  `
    CREATE FUNCTION inbox_processing_rows()
    RETURNS TABLE (chat_id bigint, claimed_by text)
    LANGUAGE sql STABLE
    SET enable_bitmapscan = off
    SET enable_seqscan = off
    AS $$
      SELECT t.chat_id, t.claimed_by FROM telegram_updates t
      WHERE t.status = 'processing' AND t.chat_id IS NOT NULL
    $$`
)

/**
 * Migration 0013: pending rows by chat, for the INSERT that claims on storing
 * (`sql/store.ts`): "has this chat a pending row?" is one probe of this index
 * (beside `telegram_updates_processing_chat` for "a row in processing?"),
 * however long the backlog.
 *
 * Gotchas: building it reads the whole table once, and stores wait for it
 * (migrations run in a transaction, so not `CONCURRENTLY`): about 0.2 s for
 * a million finished rows on the bench machine, well inside a webhook's 5 s.
 */
export const migrationPendingChat = ddl(
  `
    CREATE INDEX telegram_updates_pending_chat ON telegram_updates (chat_id)
    WHERE status = 'pending'`
)

/**
 * Migration 0014: unfinished rows by chat, in place of 0013's pending rows by
 * chat, for the INSERT that claims on storing (`sql/store.ts`): "has this
 * chat a row `pending` or `processing`?" is one probe of this index.
 *
 * Details: its predicate is written `status <> 'done' AND status <> 'dead'`,
 * not `status IN ('pending', 'processing')`, on purpose. PostgreSQL may use a
 * partial index only for a query whose conditions prove its predicate, and it
 * does not use CHECK constraints for that proof, so a probe written the same
 * way can use no other partial index of the table. With 0013's index the
 * planner had three to choose from (`pending_received`, `pending_chat`,
 * `unfinished`), costed alike whenever the statistics said few rows were
 * pending, which on a busy inbox is most of the time (rows stay pending for
 * milliseconds, and ANALYZE sees few): it took the first, read every pending
 * row for every probe, and made the probes hashed subplans that read them
 * all for each statement. Measured with 5-row statements on a table of
 * 30,000 finished rows that the runs filled with up to 15,000 unfinished
 * ones: 7.5 ms a statement on average (36 ms for one with 15,000 pending and
 * 15,000 processing rows), 0.53 ms with this index, 0.42 ms with no probe.
 *
 * Gotchas: as 0013, building it reads the whole table once while stores
 * wait (not `CONCURRENTLY`, migrations run in a transaction).
 */
export const migrationUnfinishedChat = ddl(
  `
    CREATE INDEX telegram_updates_unfinished_chat ON telegram_updates (chat_id)
    WHERE status <> 'done' AND status <> 'dead'`,
  `DROP INDEX telegram_updates_pending_chat`
)
