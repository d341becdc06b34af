/** Who holds the leader lock: for the standby's `PASSIVE_WAIT` line. */
import { Effect, Schema } from "effect"
import type { SessionQueries } from "./SessionQueries.ts"
import { lockRowMatches } from "./advisoryLock.ts"

const HolderRow = Schema.Struct({ pid: Schema.Number, application_name: Schema.NullOr(Schema.String) })

/** The holder's backend pid and application name; `undefined` when no holder is visible. */
export const findHolder = <E>(session: SessionQueries<E>, key: bigint) =>
  Effect.map(
    session.all(
      `SELECT l.pid, a.application_name FROM pg_locks l
    LEFT JOIN pg_stat_activity a ON a.pid = l.pid WHERE ${lockRowMatches(key)} LIMIT 1`,
      HolderRow
    ),
    (rows) => rows[0]
  )
