/** Tells the standbys (NOTIFY on the leader channel) that the lock on `key` is free. */
import { Effect, Schema } from "effect"
import type { SessionQueries } from "./SessionQueries.ts"
import { leaderChannel } from "./advisoryLock.ts"

const SentRow = Schema.Struct({ sent: Schema.Boolean })

/** Notifies `leaderChannel` with the key as payload. */
export const announceRelease = <E>(session: SessionQueries<E>, key: bigint) =>
  Effect.asVoid(session.first(`SELECT true AS sent FROM pg_notify('${leaderChannel}', '${key}')`, SentRow))
