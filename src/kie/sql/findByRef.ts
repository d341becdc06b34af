/** The task id of a createTask attempt, for recovery after `KieCreateTaskUncertain`. */
import { Effect, Option } from "effect"
import type { SqlClient } from "effect/sql/SqlClient"
import type { SqlError } from "effect/sql/SqlError"

/** The task id stored for `ref` (by createTask's answer or by a callback carrying the ref), if any. */
export const findTaskIdByRef = (sql: SqlClient, ref: string): Effect.Effect<Option.Option<string>, SqlError> =>
  Effect.map(
    sql<{ task_id: string | null }>`SELECT task_id FROM kie_tasks WHERE ref = ${ref}`,
    (rows) => Option.fromNullishOr(rows[0]?.task_id)
  )
