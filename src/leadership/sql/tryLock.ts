/**
 * Takes the leader lock if nobody holds it; never waits. A session that
 * already holds it (a lock wait granted just as the standby cancelled it)
 * does not take it a second time: session advisory locks count, and one
 * unlock must release it.
 */
import { Effect, Schema } from "effect"
import type { SessionQueries } from "./SessionQueries.ts"
import { keyLiteral, lockRowMatches } from "./advisoryLock.ts"

const TryLockRow = Schema.Struct({ acquired: Schema.Boolean })

/** true when this session now holds the lock on `key` (or already did). */
export const tryLock = <E>(session: SessionQueries<E>, key: bigint) =>
  Effect.map(
    session.first(
      // CASE evaluates in order: the lock is only tried when not already held.
      `SELECT CASE WHEN EXISTS (SELECT 1 FROM pg_locks l WHERE ${lockRowMatches(key)} AND l.pid = pg_backend_pid())
    THEN true ELSE pg_try_advisory_lock(${keyLiteral(key)}) END AS acquired`,
      TryLockRow
    ),
    (row) => row.acquired
  )
