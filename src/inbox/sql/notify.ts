/**
 * Announcing stored updates: a NOTIFY on the inbox's channel, which wakes the
 * dispatcher of whichever instance is ACTIVE (sent by instances that are not:
 * the ACTIVE one wakes its own dispatcher in memory).
 *
 * Gotchas: never send it from a storing transaction. PostgreSQL takes one
 * database-wide lock to commit a transaction that notified, so a NOTIFY per
 * store makes every store's commit wait in one line; `Inbox.ts` coalesces
 * them and sends each on its own.
 */
import { Effect } from "effect"
import type { SqlClient } from "effect/sql/SqlClient"
import type { SqlError } from "effect/sql/SqlError"

/** The NOTIFY channel a stored update is announced on. */
export const CHANNEL = "telegram_updates"

/** NOTIFYs the channel (empty payload: a listener only needs to know there is work). */
export const notify = (sql: SqlClient): Effect.Effect<void, SqlError> =>
  sql`SELECT pg_notify(${CHANNEL}, '')`.pipe(Effect.asVoid)
