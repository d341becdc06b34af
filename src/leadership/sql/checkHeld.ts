/**
 * The heartbeat's statement: does this session still hold the lock? A
 * `pg_locks` lookup rather than `SELECT 1`: it proves the lock, not just the
 * connection, and fails through a transaction pooler (where the statement
 * may run on another backend).
 */
import { Effect, Schema } from "effect"
import type { SessionQueries } from "./SessionQueries.ts"
import { lockRowMatches } from "./advisoryLock.ts"

const HeldRow = Schema.Struct({ held: Schema.Boolean })

/** true while the session's own backend holds the lock on `key`. */
export const checkHeld = <E>(session: SessionQueries<E>, key: bigint) =>
  Effect.map(
    session.first(
      `SELECT EXISTS (SELECT 1 FROM pg_locks l WHERE ${lockRowMatches(key)}
    AND l.pid = pg_backend_pid()) AS held`,
      HeldRow
    ),
    (row) => row.held
  )
