/** Deleting old registry rows (the table's retention). */
import { Duration, Effect } from "effect"
import type { SqlClient } from "effect/sql/SqlClient"
import type { SqlError } from "effect/sql/SqlError"

/** Deletes the rows created more than `olderThan` ago; returns how many. */
export const prune = (sql: SqlClient, olderThan: Duration.Duration): Effect.Effect<number, SqlError> => {
  const seconds = Math.ceil(Duration.toMillis(olderThan) / 1000)
  return Effect.map(
    sql<{ ref: string }>`
      DELETE FROM kie_tasks WHERE created_at < now() - make_interval(secs => ${seconds}) RETURNING ref
    `,
    (rows) => rows.length
  )
}
