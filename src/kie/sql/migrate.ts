/**
 * The `kie_tasks` table (migration 0003): one row per createTask attempt,
 * keyed by the attempt's random `ref`, with the task id once Kie gave one and
 * the first trustworthy callback for it. Never edit it once applied: add a
 * migration.
 */
import { Effect } from "effect"
import { SqlClient } from "effect/sql/SqlClient"

/** Migration 0003: the Kie task registry and callback store. */
export const migration = Effect.gen(function*() {
  const sql = yield* SqlClient
  yield* sql`
    CREATE TABLE kie_tasks (
      ref text PRIMARY KEY,
      task_id text UNIQUE,
      created_at timestamptz NOT NULL DEFAULT now(),
      submitted_at timestamptz,
      callback_state text CHECK (callback_state IN ('success', 'fail')),
      callback_data jsonb,
      callback_trusted boolean,
      callback_count integer NOT NULL DEFAULT 0,
      callback_received_at timestamptz,
      callback_last_at timestamptz
    )
  `
  // Pruning by age.
  yield* sql`CREATE INDEX kie_tasks_created_at ON kie_tasks (created_at)`
})
