/** Dropping the row of a createTask attempt that certainly created nothing. */
import { Effect } from "effect"
import type { SqlClient } from "effect/sql/SqlClient"
import type { SqlError } from "effect/sql/SqlError"

/** Deletes `ref`'s row unless it already has a task id (then a callback may still come). */
export const forget = (sql: SqlClient, ref: string): Effect.Effect<void, SqlError> =>
  Effect.asVoid(sql`DELETE FROM kie_tasks WHERE ref = ${ref} AND task_id IS NULL`)
