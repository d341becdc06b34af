/**
 * The standby's blocking wait for the leader lock: `pg_advisory_lock` on the
 * lock session, granted by PostgreSQL the moment the holder's session ends or
 * unlocks, so a takeover does not wait for a retry tick.
 *
 * Gotchas: the session's `statement_timeout` would cut the wait short, so
 * `armWait` lifts it and bounds the wait with `lock_timeout` instead (a
 * server-side backstop; the standby also cancels the wait on its own clock),
 * and `disarmWait` puts the session's usual bounds back once the lock is held.
 */
import { Duration, Effect, Option, Schema } from "effect"
import type { BlockingQueries, SessionQueries } from "./SessionQueries.ts"
import { keyLiteral } from "./advisoryLock.ts"
import { sessionStatementTimeout } from "./applySettings.ts"

const SetRow = Schema.Struct({ statement_timeout: Schema.String, lock_timeout: Schema.String })
const AcquiredRow = Schema.Struct({ acquired: Schema.Boolean })

const setTimeouts = <E>(session: SessionQueries<E>, statementTimeout: string, lockTimeout: string) =>
  Effect.asVoid(session.first(
    `SELECT set_config('statement_timeout', '${statementTimeout}', false) AS statement_timeout,
      set_config('lock_timeout', '${lockTimeout}', false) AS lock_timeout`,
    SetRow
  ))

/** Prepares the session for blocking waits of at most `backstop` each (server-side). */
export const armWait = <E>(session: SessionQueries<E>, backstop: Duration.Duration) =>
  setTimeouts(session, "0", `${Duration.toMillis(backstop)}ms`)

/** Restores the session's usual bounds (after the lock was taken). */
export const disarmWait = <E>(session: SessionQueries<E>) => setTimeouts(session, sessionStatementTimeout, "0")

/**
 * Waits for the lock on `key`: true once this session holds it, false when
 * the server's `lock_timeout` ended the wait (the session stays usable).
 * Interrupting it cancels the statement.
 */
export const waitLock = <E>(session: BlockingQueries<E>, key: bigint) =>
  Effect.map(
    session.blocking(`SELECT true AS acquired FROM pg_advisory_lock(${keyLiteral(key)})`, AcquiredRow),
    Option.isSome
  )
