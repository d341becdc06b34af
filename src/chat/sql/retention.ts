/**
 * Retention of `chat_sessions`: a conversation (a chat and user) untouched
 * for the retention period loses its row (its prompt, if it was half-way, and its ids); if it comes
 * back it starts from `idle`, as a new chat does.
 *
 * Why here and not in `ChatSessions.ts`: that module is the conversation's
 * table service, used on every update; this is a leader-only chore on the
 * same table that only `Retention` runs.
 */
import { DateTime, Effect } from "effect"
import type { SqlClient } from "effect/sql/SqlClient"
import type { SqlError } from "effect/sql/SqlError"
import { ddl } from "../../database/SqlColumns.ts"

/** Part of migration 0010: the purge reads sessions by `updated_at`, which no index served. */
export const migrationSessionsUpdatedAt = ddl(
  `CREATE INDEX chat_sessions_updated ON chat_sessions (updated_at)`
)

/**
 * Deletes up to `limit` sessions last updated before `before`, oldest first; returns how many.
 *
 * The batch is found by row address (`ctid = ANY(ARRAY(…))`): with `IN (…)`
 * on the two key columns the planner hashed the whole table for a batch of a
 * thousand (56 ms at 100,000 sessions, growing with them). The age is checked
 * again outside: a session a user touched meanwhile is kept.
 */
export const purgeSessions = (
  sql: SqlClient,
  before: DateTime.Utc,
  limit: number
): Effect.Effect<number, SqlError> =>
  sql`
    DELETE FROM chat_sessions WHERE ctid = ANY(ARRAY(
      SELECT ctid FROM chat_sessions WHERE updated_at < ${DateTime.toDateUtc(before)}
      ORDER BY updated_at
      LIMIT ${limit}
    ))
    AND updated_at < ${DateTime.toDateUtc(before)}
    RETURNING chat_id`.pipe(Effect.map((rows) => rows.length))
