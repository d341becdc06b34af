/**
 * Announcing a stored callback: a NOTIFY on channel `kie_callback` with the
 * task id, which every instance LISTENs to so it can tell its own subscribers.
 *
 * Gotchas: sent inside the storing transaction, so it is delivered only when
 * the row is committed (a listener that reads the row finds it).
 */
import { Effect } from "effect"
import type { SqlClient } from "effect/sql/SqlClient"
import type { SqlError } from "effect/sql/SqlError"

/** The NOTIFY channel; the payload is the task id. */
export const CALLBACK_CHANNEL = "kie_callback"

/** NOTIFYs that a callback for `taskId` was stored. */
export const notify = (sql: SqlClient, taskId: string): Effect.Effect<void, SqlError> =>
  Effect.asVoid(sql`SELECT pg_notify(${CALLBACK_CHANNEL}, ${taskId})`)
