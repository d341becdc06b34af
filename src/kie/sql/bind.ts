/** Storing the task id Kie gave the createTask attempt `ref`. */
import { Effect } from "effect"
import type { SqlClient } from "effect/sql/SqlClient"
import type { SqlError } from "effect/sql/SqlError"

/** Sets the task id (and when it was submitted) of `ref`'s row, creating the row if registering it failed. */
export const bind = (sql: SqlClient, ref: string, taskId: string): Effect.Effect<void, SqlError> =>
  Effect.asVoid(sql`
    INSERT INTO kie_tasks (ref, task_id, submitted_at) VALUES (${ref}, ${taskId}, now())
    ON CONFLICT (ref) DO UPDATE SET task_id = EXCLUDED.task_id, submitted_at = EXCLUDED.submitted_at
  `)
