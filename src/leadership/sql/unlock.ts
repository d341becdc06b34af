/** Releases the leader lock held by this session. */
import { Effect, Schema } from "effect"
import type { SessionQueries } from "./SessionQueries.ts"
import { keyLiteral } from "./advisoryLock.ts"

const UnlockRow = Schema.Struct({ released: Schema.Boolean })

/** true if the session held the lock and released it; false if it did not hold it. */
export const unlock = <E>(session: SessionQueries<E>, key: bigint) =>
  Effect.map(
    session.first(`SELECT pg_advisory_unlock(${keyLiteral(key)}) AS released`, UnlockRow),
    (row) => row.released
  )
