/**
 * Registering a createTask attempt before it is sent: a row with only its
 * `ref`, so a callback carrying that ref can be matched even if Kie's answer
 * to the createTask is lost.
 */
import { Effect } from "effect"
import type { SqlClient } from "effect/sql/SqlClient"
import type { SqlError } from "effect/sql/SqlError"

/** Inserts the row of `ref`; a second registration of the same ref changes nothing. */
export const register = (sql: SqlClient, ref: string): Effect.Effect<void, SqlError> =>
  Effect.asVoid(sql`INSERT INTO kie_tasks (ref) VALUES (${ref}) ON CONFLICT (ref) DO NOTHING`)
