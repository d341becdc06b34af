/**
 * The lock session: the dedicated PostgreSQL connection on which this
 * instance takes, holds and releases the leader lock.
 *
 * When to use: one per attempt at leadership. Open it, contend and lead on
 * it, and close it when that attempt ends, whichever way.
 *
 * Details: why a separate connection rather than `sql.reserve` from the pool:
 * - it never takes a slot from the pool that serves webhooks and workers, and
 *   a PASSIVE instance holds it for as long as it contends;
 * - it gets its own `application_name` ("zimage-bot leader <instance>"), so a
 *   PASSIVE instance can name the holder and an operator can find (and, if
 *   need be, `pg_terminate_backend`) the leader's session;
 * - it gets client-side TCP keepalive and its own session settings
 *   (`sql/applySettings.ts`);
 * - its lifetime is exactly one attempt: after any failure it is closed and a
 *   new one is opened, so a killed session can never be handed to anyone else.
 * The cost is one connection per instance on top of the pool.
 *
 * The connection is pinned for exclusive use and LISTENs on the leader
 * channel: the driver fails a listener's queue the moment the connection
 * dies (`pg_terminate_backend`, a reset, the server going away), which is how
 * `dropped` notices a lost session within milliseconds instead of at the next
 * heartbeat. The heartbeat still covers a connection that goes silent.
 *
 * Gotchas: every statement is bounded by `sessionQueryTimeout` without
 * waiting for the interrupted query (`Bounded.ts`); after a failed statement
 * the caller must `close` the session, which also ends that query. The one
 * exception is `blocking` (the standby's lock wait): it has no bound of its
 * own, its caller bounds it on its own clock and interrupts it, which cancels
 * the statement and leaves the session usable.
 */
import { type PgClient, PgConnection } from "@effect/sql-pg"
import { Duration, Effect, Exit, Option, Queue, Schema, Scope } from "effect"
import { describeUnknown } from "../database/SqlErrors.ts"
import { detachedWithin } from "./Bounded.ts"
import { instanceApplicationName, instanceApplicationPrefixes } from "./LeaderTerm.ts"
import { leaderChannel } from "./sql/advisoryLock.ts"
import { applySettings } from "./sql/applySettings.ts"
import type { BlockingQueries, SessionQueries } from "./sql/SessionQueries.ts"

/** The lock session could not be opened, or it failed or dropped. */
export class LockSessionFailed extends Schema.TaggedError<LockSessionFailed>()("LockSessionFailed", {
  message: Schema.String
}) {}

/** Bound of every statement on the lock session (heartbeat, try, unlock). */
export const sessionQueryTimeout = Duration.seconds(2)
const sessionConnectTimeout = Duration.seconds(5)
/** Client-side TCP keepalive on the lock session's socket. */
const clientKeepAlive = Duration.seconds(10)

/** An open lock session. */
export interface LockSession extends SessionQueries<LockSessionFailed>, BlockingQueries<LockSessionFailed> {
  /** Backend pid of the session, for logs and operators. */
  readonly pid: number
  /** Fails as soon as the session's connection is gone; never succeeds. */
  readonly dropped: Effect.Effect<never, LockSessionFailed>
  /** Closes the connection now (sends Terminate); synchronous, never blocks. */
  readonly close: Effect.Effect<void>
}

/**
 * Opens a lock session; it lives until `close` or until the caller's scope
 * closes, whichever comes first.
 */
export const openLockSession = Effect.fn("LeaderLock.openSession")(function*(options: PgConnection.Config) {
  // Closing this scope kills the socket. It is closed before anything else of
  // the session is released, so no finalizer (UNLISTEN, unpin) ever waits on
  // a connection that may be dead.
  const connectionScope = yield* Scope.make()
  const close = Scope.close(connectionScope, Exit.void)

  const fail = (what: string) => (error: unknown) =>
    new LockSessionFailed({ message: `${what}: ${describeUnknown(error)}` })

  return yield* Effect.gen(function*() {
    const connection = yield* PgConnection.make(options).pipe(
      Scope.provide(connectionScope),
      Effect.mapError(fail("cannot open the lock session"))
    )
    const pinned = yield* connection.pin.pipe(Scope.provide(connectionScope))

    const all = <A>(sql: string, row: Schema.Decoder<A>) =>
      detachedWithin(pinned.query(sql), sessionQueryTimeout).pipe(
        Effect.flatMap((result) => Schema.decodeUnknownEffect(Schema.Array(row))(result.rows)),
        Effect.mapError(fail("lock session statement failed"))
      )
    const first = <A>(sql: string, row: Schema.Decoder<A>) =>
      Effect.flatMap(all(sql, row), (rows) =>
        rows.length > 0
          ? Effect.succeed(rows[0]!)
          : Effect.fail(new LockSessionFailed({ message: "lock session statement returned no row" })))

    const blocking = <A>(sql: string, row: Schema.Decoder<A>) =>
      Effect.gen(function*() {
        const result = yield* pinned.query(sql).pipe(
          Effect.map(Option.some),
          Effect.catchReason("SqlError", "LockTimeoutError", () => Effect.succeed(Option.none<PgConnection.Result>()))
        )
        if (Option.isNone(result)) return Option.none<A>()
        const rows = yield* Schema.decodeUnknownEffect(Schema.Array(row))(result.value.rows)
        return Option.fromNullishOr(rows[0])
      }).pipe(Effect.mapError(fail("lock session wait failed")))

    const keepalives = yield* applySettings({ first, all })

    // The listener lives in the caller's scope; the finalizer added after it
    // runs first and kills the connection, so the listener's UNLISTEN is skipped.
    const notifications = yield* pinned.listen(leaderChannel).pipe(
      Effect.mapError(fail("cannot watch the lock session"))
    )
    yield* Effect.addFinalizer(() => close)

    const nextNotification = Queue.take(notifications).pipe(
      Effect.mapError(fail("the lock session's connection dropped"))
    )
    const dropped: Effect.Effect<never, LockSessionFailed> = Effect.forever(nextNotification)

    yield* Effect.logDebug(
      `[LOCK] lock session opened (backend pid ${connection.processId}); tcp keepalives ${keepalives}`
    )
    return { pid: connection.processId, first, all, blocking, dropped, close } satisfies LockSession
  }).pipe(Effect.onError(() => close))
})

/** Connection settings of the lock session, from the pool's. */
export const lockSessionOptions = (pool: PgClient.PgClientConfig, instanceId: string): PgConnection.Config => ({
  url: pool.url,
  host: pool.host,
  port: pool.port,
  path: pool.path,
  ssl: pool.ssl,
  database: pool.database,
  username: pool.username,
  password: pool.password,
  stream: pool.stream,
  types: pool.types,
  startupParameters: pool.startupParameters,
  startupOptions: pool.startupOptions,
  maxMessageSize: pool.maxMessageSize,
  connectTimeout: sessionConnectTimeout,
  keepAlive: clientKeepAlive,
  applicationName: instanceApplicationName(instanceApplicationPrefixes.lockSession, instanceId)
})
