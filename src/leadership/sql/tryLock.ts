/** Takes the leader lock if nobody holds it; never waits. */
import { Effect, Schema } from "effect"
import type { SessionQueries } from "./SessionQueries.ts"
import { keyLiteral } from "./advisoryLock.ts"

const TryLockRow = Schema.Struct({ acquired: Schema.Boolean })

/** true when this session now holds the lock on `key` (or already did). */
export const tryLock = <E>(session: SessionQueries<E>, key: bigint) =>
  Effect.map(
    session.first(`SELECT pg_try_advisory_lock(${keyLiteral(key)}) AS acquired`, TryLockRow),
    (row) => row.acquired
  )
