/**
 * Leader election: exactly one instance is ACTIVE and runs the leader-only
 * services; the others stay PASSIVE, healthy, and ready to take over.
 *
 * The leader is whoever holds a session-level PostgreSQL advisory lock
 * (`pg_try_advisory_lock(LEADER_LOCK_KEY)`) on a dedicated connection, the
 * "lock session". For the life of the layer one controller fiber:
 *
 * 1. waits for `Database.ready`, then opens a lock session (retrying with
 *    backoff while the database refuses, logging once per change);
 * 2. tries the lock every second, and at once when the holder announces its
 *    release (NOTIFY); logs `PASSIVE_WAIT` the first time and then every 30 s
 *    with the holder's pid and application name;
 * 3. on success logs the seed's markers, flips `active` to true and builds the
 *    leader-only layer inside a fresh leadership scope;
 * 4. while ACTIVE, checks every second that the lock session still holds the
 *    lock (a `pg_locks` lookup rather than `SELECT 1`: it proves the lock, not
 *    just the connection, and fails through a transaction pooler), bounded by a
 *    2 s timeout, and independently notices at once when the session's
 *    connection drops (see `openSession`). On either, it flips to PASSIVE
 *    first, then closes the leadership scope with a failure exit (no
 *    draining), waits 2 s (so a standby takes over) and starts over on a new
 *    connection;
 * 5. when the layer's scope closes (SIGTERM, shutdown) it closes the leadership
 *    scope with `Exit.void` so services can drain (bounded by
 *    SHUTDOWN_TIMEOUT_MS), then unlocks, then flips PASSIVE, then announces the
 *    release.
 *
 * A `leaderOnly` build failure or defect never crashes the process: it is
 * logged, the lock is released so another instance can try, and this one backs
 * off before contending again.
 *
 * Every step that talks to the database is bounded without waiting for the
 * interrupted query (see `detachedWithin`): a connection that went silent must
 * not delay fencing or shutdown.
 */
import { PgClient, PgConnection } from "@effect/sql-pg"
import {
  Cause,
  Clock,
  Context,
  DateTime,
  Duration,
  Effect,
  Exit,
  Fiber,
  Layer,
  Metric,
  Option,
  Predicate,
  Queue,
  Ref,
  Schedule,
  Schema,
  Scope,
  SubscriptionRef
} from "effect"
import type { SqlError } from "effect/sql/SqlError"
import { AppConfig } from "../platform/AppConfig.ts"
import { Database } from "../database/Database.ts"
import { Health } from "../platform/Health.ts"
import * as Metrics from "../platform/Metrics.ts"
import { backoff } from "../platform/Retry.ts"

// ---------------------------------------------------------------------------
// Public surface

/**
 * Where the controller is. Phases marked (waiting) are the ones in which it
 * sleeps on the clock or waits for an outside event; in the others a database
 * round trip or a leader-only startup is in flight.
 */
export type LeaderPhase =
  | "waiting_for_database" // (waiting) Database.ready has not completed yet
  | "connecting" // opening the lock session
  | "trying" // pg_try_advisory_lock in flight
  | "passive" // (waiting) another instance holds the lock; next try in 1 s
  | "starting" // lock held, leader-only services being built
  | "active" // (waiting) lock held, leader-only services running
  | "checking" // lock held, heartbeat in flight
  | "stepping_down" // releasing: draining leader-only services, unlocking
  | "backoff" // (waiting) after a failure, before the next attempt
  | "stopped" // the layer was released

export const waitingPhases: ReadonlySet<LeaderPhase> = new Set<LeaderPhase>([
  "waiting_for_database",
  "passive",
  "active",
  "backoff",
  "stopped"
])

export interface LeaderStatus {
  readonly phase: LeaderPhase
  /** When this instance last became ACTIVE; `None` while PASSIVE. */
  readonly activeSince: Option.Option<DateTime.Utc>
  /**
   * A heartbeat statement is in flight. While ACTIVE this is also visible as
   * the "checking" phase; while stepping down the phase stays
   * "stepping_down", so this is how a caller sees that the lock session is
   * mid round trip.
   */
  readonly heartbeatInFlight: boolean
}

export class LeaderState extends Context.Service<LeaderState, {
  /** true while this instance holds the lock and its leader-only services run */
  readonly active: SubscriptionRef.SubscriptionRef<boolean> // read-only for others by convention
  readonly isActive: Effect.Effect<boolean>
  /** Finer-grained than `active`, for /health, operators and tests. Read-only by convention. */
  readonly status: SubscriptionRef.SubscriptionRef<LeaderStatus>
  /** The advisory lock key in use (not a secret). */
  readonly lockKey: bigint
}>()("zimage-bot/LeaderState") {}

/** The lock session could not be opened, or it failed or dropped. */
export class LockSessionFailed extends Schema.TaggedError<LockSessionFailed>()("LockSessionFailed", {
  message: Schema.String
}) {}

/** This instance was ACTIVE and can no longer prove it holds the lock. */
export class LeadershipLost extends Schema.TaggedError<LeadershipLost>()("LeadershipLost", {
  message: Schema.String
}) {}

/** Building the leader-only layer failed or died. */
export class LeaderServicesFailed extends Schema.TaggedError<LeaderServicesFailed>()("LeaderServicesFailed", {
  message: Schema.String
}) {}

// ---------------------------------------------------------------------------
// Policies

/** While PASSIVE: one `pg_try_advisory_lock` per second (sooner when the holder announces its release). */
export const contendInterval = Duration.seconds(1)

/** While ACTIVE: one ownership check per second. */
const heartbeatInterval = Duration.seconds(1)
export const heartbeatPolicy = Schedule.spaced(heartbeatInterval)

/** While the lock session cannot be opened (database down, refusing connections). */
export const sessionRetryPolicy = backoff("1 second", "10 seconds")

/**
 * After leader-only services failed to start: back off so a persistent
 * failure (a bad token, say) does not make the instances pass the lock around
 * in a tight loop.
 */
export const leaderFailurePolicy = backoff("2 seconds", "60 seconds")

/** Bound of every statement on the lock session (heartbeat, try, unlock). */
export const sessionQueryTimeout = Duration.seconds(2)
const sessionConnectTimeout = Duration.seconds(5)
/** Client-side TCP keepalive on the lock session's socket. */
const clientKeepAlive = Duration.seconds(10)
/** How often a still-waiting PASSIVE instance repeats `PASSIVE_WAIT`. */
export const passiveWaitLogInterval = Duration.seconds(30)
/** After a loss, leader-only services stop without draining; this bounds it. */
const stopAfterLossTimeout = Duration.seconds(5)
/** Added to SHUTDOWN_TIMEOUT_MS, which the services themselves honour. */
const drainGrace = Duration.seconds(1)
/** Pause before reopening a lock session that failed while PASSIVE. */
const sessionFailurePause = Duration.seconds(1)
/**
 * After losing the lock, wait this long before contending again: longer than
 * the standbys' try interval, so a standby takes over from a holder whose
 * session just died (it may be the one in trouble). A lone instance simply
 * resumes after it.
 */
export const lossCooldown = Duration.seconds(2)

/**
 * Server-side settings of the lock session, applied only where the server
 * knows the setting (`tcp_user_timeout` is PG 12+, `idle_session_timeout` PG
 * 14+). Keepalives 10 s / 5 s / 3 make the server drop a vanished holder's
 * session, and so release the lock, after about 25 s without an answer;
 * `tcp_user_timeout` does the same when unacknowledged data is pending, where
 * keepalives do not run. The holder itself fences after ~3 s (heartbeat), long
 * before that. `idle_session_timeout = 0` keeps a server-wide setting from
 * killing the holder. On a unix socket the TCP settings do not apply and read
 * back as 0.
 */
const sessionSettingsSql = `SELECT name, set_config(name, value, false) AS value
FROM (VALUES ('statement_timeout', '5s'),
             ('idle_session_timeout', '0'),
             ('idle_in_transaction_session_timeout', '0'),
             ('tcp_keepalives_idle', '10'),
             ('tcp_keepalives_interval', '5'),
             ('tcp_keepalives_count', '3'),
             ('tcp_user_timeout', '25000')) AS wanted(name, value)
WHERE name IN (SELECT name FROM pg_settings)`

/**
 * Every lock session LISTENs here. A releasing holder notifies it with its
 * key, so standbys try at once instead of at their next tick; and the
 * listener is how a session learns within milliseconds that its connection
 * dropped (see `openSession`).
 */
const leaderChannel = "zimage_bot_leader"

/** A bigint literal; quoted so that -2^63 parses too. */
const keyLiteral = (key: bigint) => `'${key.toString()}'::bigint`

/**
 * `pg_locks` stores a bigint advisory key as classid (high 32 bits) and objid
 * (low 32 bits) with objsubid = 1.
 */
const lockRowMatches = (key: bigint) =>
  `l.locktype = 'advisory' AND l.granted AND l.objsubid = 1
  AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
  AND ((l.classid::bigint << 32) | l.objid::bigint) = ${keyLiteral(key)}`

const lockStatements = (key: bigint) => ({
  tryLock: `SELECT pg_try_advisory_lock(${keyLiteral(key)}) AS acquired`,
  stillHeld: `SELECT EXISTS (SELECT 1 FROM pg_locks l WHERE ${lockRowMatches(key)}
    AND l.pid = pg_backend_pid()) AS held`,
  unlock: `SELECT pg_advisory_unlock(${keyLiteral(key)}) AS released`,
  announceRelease: `SELECT true AS sent FROM pg_notify('${leaderChannel}', '${key}')`,
  holder: `SELECT l.pid, a.application_name FROM pg_locks l
    LEFT JOIN pg_stat_activity a ON a.pid = l.pid WHERE ${lockRowMatches(key)} LIMIT 1`
})

const TryLockRow = Schema.Struct({ acquired: Schema.Boolean })
const HeldRow = Schema.Struct({ held: Schema.Boolean })
const UnlockRow = Schema.Struct({ released: Schema.Boolean })
const SentRow = Schema.Struct({ sent: Schema.Boolean })
const HolderRow = Schema.Struct({ pid: Schema.Number, application_name: Schema.NullOr(Schema.String) })
const SettingRow = Schema.Struct({ name: Schema.String, value: Schema.String })

// ---------------------------------------------------------------------------
// Helpers

const describeSqlError = (error: SqlError): string => {
  const cause = error.reason.cause as { message?: unknown } | undefined
  const detail = typeof cause?.message === "string" ? cause.message : ""
  return detail !== "" && !error.message.includes(detail) ? `${error.message}: ${detail}` : error.message
}

/** One line for an arbitrary failure, never the whole object. */
const describeUnknown = (error: unknown): string => {
  if (typeof error === "object" && error !== null) {
    const tagged = error as { _tag?: unknown; message?: unknown }
    const message = typeof tagged.message === "string" ? tagged.message : ""
    const tag = typeof tagged._tag === "string" ? tagged._tag : error instanceof Error ? error.name : "Error"
    return message === "" ? tag : `${tag}: ${message}`
  }
  return String(error)
}

const describeCause = (cause: Cause.Cause<unknown>): string => {
  const error = Cause.findErrorOption(cause)
  if (Option.isSome(error)) return describeUnknown(error.value)
  const defect = Cause.findDefect(cause)
  if (defect._tag === "Success") return `defect: ${describeUnknown(defect.success)}`
  return Cause.hasInterrupts(cause) ? "interrupted" : "unknown failure"
}

/**
 * Runs `effect` on a detached fiber and waits for it at most `timeout`.
 *
 * Interrupting a statement on a silent connection waits for the cancel
 * round trip (seconds), and closing a scope runs its finalizers
 * uninterruptibly, so a plain `Effect.timeout` would wait for exactly the
 * thing that hangs. Here the caller stops waiting on time; the detached fiber
 * ends when its connection is closed (which the caller always does after a
 * failed session statement) or when its finalizers finish.
 */
const detachedWithin = <A, E>(effect: Effect.Effect<A, E>, timeout: Duration.Duration) =>
  Effect.flatMap(Effect.forkDetach(effect), (fiber) => Fiber.join(fiber).pipe(Effect.timeout(timeout)))

// ---------------------------------------------------------------------------
// The lock session

interface LockSession {
  /** Backend pid of the session, for logs and operators. */
  readonly pid: number
  /** Runs one statement on the session and decodes its first row. */
  readonly first: <A>(sql: string, row: Schema.Decoder<A>) => Effect.Effect<A, LockSessionFailed>
  readonly all: <A>(sql: string, row: Schema.Decoder<A>) => Effect.Effect<ReadonlyArray<A>, LockSessionFailed>
  /** Fails as soon as the session's connection is gone; never succeeds. */
  readonly dropped: Effect.Effect<never, LockSessionFailed>
  /** Completes when a holder of `key` announces its release; fails like `dropped`. */
  readonly released: (key: bigint) => Effect.Effect<void, LockSessionFailed>
  /** Closes the connection now (sends Terminate); synchronous, never blocks. */
  readonly close: Effect.Effect<void>
}

/**
 * Why a separate connection rather than `sql.reserve` from the pool:
 * - it never takes a slot from the pool that serves webhooks and workers, and
 *   a PASSIVE instance holds it for as long as it contends;
 * - it gets its own `application_name` ("zimage-bot leader <instance>"), so a
 *   PASSIVE instance can name the holder and an operator can find (and, if
 *   need be, `pg_terminate_backend`) the leader's session;
 * - it gets client-side TCP keepalive and its own session settings;
 * - its lifetime is exactly one attempt: after any failure it is closed and a
 *   new one is opened, so a killed session can never be handed to anyone else.
 * The cost is one connection per instance on top of the pool.
 *
 * The connection is pinned for exclusive use and LISTENs on a channel nobody
 * notifies: the driver fails a listener's queue the moment the connection
 * dies (`pg_terminate_backend`, a reset, the server going away), which is how
 * `dropped` notices a lost session within milliseconds instead of at the next
 * heartbeat. The heartbeat still covers a connection that goes silent.
 */
const openSession = Effect.fn("LeaderLock.openSession")(function*(options: PgConnection.Config) {
  // Closing this scope kills the socket. It is closed before anything else of
  // the session is released, so no finalizer (UNLISTEN, unpin) ever waits on
  // a connection that may be dead.
  const connectionScope = yield* Scope.make()
  const close = Scope.close(connectionScope, Exit.void)

  const fail = (what: string) => (error: unknown) =>
    new LockSessionFailed({
      message: `${what}: ${isSqlError(error) ? describeSqlError(error) : describeUnknown(error)}`
    })

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

    const settings = yield* all(sessionSettingsSql, SettingRow)

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
    const released = (key: bigint) =>
      nextNotification.pipe(
        Effect.repeat({ until: (notification) => notification.payload === key.toString() }),
        Effect.asVoid
      )

    const setting = (name: string) => settings.find((s) => s.name === name)?.value ?? "n/a"
    const keepalives = setting("tcp_keepalives_idle") === "0"
      ? "not applicable (unix socket)"
      : `idle=${setting("tcp_keepalives_idle")}s interval=${setting("tcp_keepalives_interval")}s count=${
        setting("tcp_keepalives_count")
      } user_timeout=${setting("tcp_user_timeout")}ms`
    yield* Effect.logDebug(
      `[LOCK] lock session opened (backend pid ${connection.processId}); tcp keepalives ${keepalives}`
    )

    return { pid: connection.processId, first, all, dropped, released, close } satisfies LockSession
  }).pipe(Effect.onError(() => close))
})

const isSqlError = (error: unknown): error is SqlError => Predicate.isTagged(error, "SqlError")

/** Connection settings of the lock session, from the pool's. */
const sessionOptions = (pool: PgClient.PgClientConfig, instanceId: string): PgConnection.Config => ({
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
  applicationName: `zimage-bot leader ${instanceId}`.slice(0, 63)
})

// ---------------------------------------------------------------------------
// The controller

type StepDownReason = "lock_lost" | "released" | "leader_services_failed"

/** `zimage_leader_transitions_total{kind}` of each way a term ends. */
const transitionKind: Record<StepDownReason, string> = {
  lock_lost: "lost",
  released: "released",
  leader_services_failed: "failed"
}

/** Keeps `zimage_leader_active` and `zimage_leader_transitions_total` in step with `active`. */
const recordTransition = (active: boolean, kind: string) =>
  Effect.andThen(
    Metric.update(Metrics.leaderActive, active ? 1 : 0),
    Metric.update(Metric.withAttributes(Metrics.leaderTransitions, { kind }), 1)
  )

/**
 * Holds/contends for the advisory lock (key = AppConfig.leaderLockKey) for the life of the layer.
 * Each time this instance becomes ACTIVE it builds `leaderOnly` inside a fresh "leadership scope";
 * when leadership ends it closes that scope.
 *
 * `leaderOnly` can use `LeaderState` (e.g. to check `isActive` before a side
 * effect). It is built with a child of the application's memo map, so layers
 * the application already built (clients, repositories) are shared, while
 * the leader-only services themselves are built fresh for every term.
 */
export const layer = <E, R>(
  leaderOnly: Layer.Layer<never, E, R>
): Layer.Layer<LeaderState, never, Exclude<R, LeaderState> | AppConfig | Database | PgClient.PgClient | Health> =>
  Layer.effect(
    LeaderState,
    Effect.gen(function*() {
      const config = yield* AppConfig
      const database = yield* Database
      const pg = yield* PgClient.PgClient
      const health = yield* Health
      const key = config.leaderLockKey
      const sql = lockStatements(key)

      const active = yield* SubscriptionRef.make(false)
      const status = yield* SubscriptionRef.make<LeaderStatus>({
        phase: "waiting_for_database",
        activeSince: Option.none(),
        heartbeatInFlight: false
      })
      const state = LeaderState.of({ active, isActive: SubscriptionRef.get(active), status, lockKey: key })

      yield* health.register(Effect.gen(function*() {
        const isActive = yield* SubscriptionRef.get(active)
        const current = yield* SubscriptionRef.get(status)
        return {
          active: isActive,
          role: isActive ? "active" : "passive",
          leader_phase: current.phase,
          leader_since: isActive ? Option.getOrNull(Option.map(current.activeSince, DateTime.formatIso)) : null,
          lock_key: key.toString()
        }
      }))

      const setPhase = (phase: LeaderPhase) => SubscriptionRef.update(status, (s): LeaderStatus => ({ ...s, phase }))

      // --- transitions ------------------------------------------------------

      const becomeActive = (session: LockSession) =>
        Effect.gen(function*() {
          yield* Effect.logInfo("[LOCK] ✅ ACTIVE MODE: PostgreSQL advisory lock acquired").pipe(
            Effect.annotateLogs({ lock_session_pid: session.pid })
          )
          yield* Effect.logInfo("[LOCK_CONTROLLER] State transition: PASSIVE → ACTIVE")
          const now = yield* DateTime.now
          yield* SubscriptionRef.set(status, {
            phase: "starting" as const,
            activeSince: Option.some(now),
            heartbeatInFlight: false
          })
          yield* SubscriptionRef.set(active, true)
          yield* recordTransition(true, "acquired")
          yield* Effect.logInfo("[STATE_SYNC] active_state: False -> True (reason=lock_acquired)")
        })

      /** Idempotent: a second call (loss noticed while draining) logs nothing. */
      const becomePassive = (reason: StepDownReason) =>
        Effect.gen(function*() {
          // Status first, so whoever sees `active` turn false also sees a busy phase.
          yield* SubscriptionRef.update(status, (s): LeaderStatus =>
            s.phase === "stopped" ? s : { ...s, phase: "stepping_down", activeSince: Option.none() })
          const was = yield* SubscriptionRef.getAndSet(active, false)
          if (!was) return
          yield* recordTransition(false, transitionKind[reason])
          const log = reason === "released" ? Effect.logInfo : Effect.logWarning
          yield* log("[LOCK_CONTROLLER] State transition: ACTIVE → PASSIVE")
          yield* log(`[STATE_SYNC] active_state: True -> False (reason=${reason})`)
        })

      // --- opening a session --------------------------------------------------

      const sessionDownReported = yield* Ref.make(false)
      const options = sessionOptions(pg.config, config.instanceId)

      /** Opens a lock session, retrying with backoff; logs once per change. */
      const openSessionWithRetry = Effect.gen(function*() {
        yield* setPhase("connecting")
        return yield* openSession(options)
      }).pipe(
        Effect.tapError((error) =>
          Effect.gen(function*() {
            yield* setPhase("backoff")
            if (!(yield* Ref.getAndSet(sessionDownReported, true))) {
              yield* Effect.logWarning(
                `[LOCK] cannot open the lock session; staying PASSIVE and retrying with backoff: ${error.message}`
              )
            }
          })
        ),
        Effect.retry({ schedule: sessionRetryPolicy }),
        Effect.tap(() =>
          Effect.gen(function*() {
            if (yield* Ref.getAndSet(sessionDownReported, false)) {
              yield* Effect.logInfo("[LOCK] lock session open again; contending for the leader lock")
            }
          })
        )
      )

      // --- PASSIVE: contending ------------------------------------------------

      /** Clock time of the last PASSIVE_WAIT line; reset on becoming ACTIVE. */
      const lastPassiveWaitLog = yield* Ref.make(Option.none<number>())

      const logPassiveWait = (session: LockSession) =>
        Effect.gen(function*() {
          const now = yield* Clock.currentTimeMillis
          const last = yield* Ref.get(lastPassiveWaitLog)
          if (Option.isSome(last) && now - last.value < Duration.toMillis(passiveWaitLogInterval)) return
          yield* Ref.set(lastPassiveWaitLog, Option.some(now))
          const holder = yield* session.all(sql.holder, HolderRow).pipe(
            Effect.map((rows) =>
              rows.length === 0
                ? "holder not visible"
                : `held by pid ${rows[0]!.pid}${
                  rows[0]!.application_name ? ` (${JSON.stringify(rows[0]!.application_name)})` : ""
                }`
            ),
            Effect.catch(() => Effect.succeed("holder unknown"))
          )
          yield* Effect.logInfo(
            `[LOCK] ⏳ PASSIVE_WAIT: leader lock ${holder}; trying again every second`
          )
        })

      const tryOnce = (session: LockSession) =>
        Effect.gen(function*() {
          yield* setPhase("trying")
          const { acquired } = yield* session.first(sql.tryLock, TryLockRow)
          if (!acquired) {
            yield* logPassiveWait(session)
            yield* setPhase("passive")
          }
          return acquired
        })

      /**
       * Succeeds once this session holds the lock; fails if the session breaks
       * (a failed try, or the connection dropping while waiting).
       */
      const contend = (session: LockSession) =>
        Effect.gen(function*() {
          while (!(yield* tryOnce(session))) {
            yield* Effect.raceFirst(Effect.sleep(contendInterval), session.released(key))
          }
        })

      // --- ACTIVE: supervising ------------------------------------------------

      const toLost = (error: LockSessionFailed) => new LeadershipLost({ message: error.message })

      /** Moves `from` → `to` only; leaves "starting"/"stepping_down" alone. */
      const switchPhase = (from: LeaderPhase, to: LeaderPhase) =>
        SubscriptionRef.update(status, (s): LeaderStatus => s.phase === from ? { ...s, phase: to } : s)

      /**
       * Fails with `LeadershipLost` when the lock can no longer be proven;
       * never succeeds. Runs for the whole term: while the leader-only
       * services start, while they run, and while they drain.
       */
      const supervise = (session: LockSession): Effect.Effect<never, LeadershipLost> => {
        const setInFlight = (inFlight: boolean) =>
          SubscriptionRef.update(status, (s): LeaderStatus => ({
            ...s,
            phase: inFlight && s.phase === "active" ? "checking" : s.phase,
            heartbeatInFlight: inFlight
          }))
        const check = Effect.gen(function*() {
          yield* setInFlight(true)
          const { held } = yield* session.first(sql.stillHeld, HeldRow).pipe(
            Effect.mapError(toLost),
            Effect.ensuring(setInFlight(false))
          )
          if (!held) {
            return yield* new LeadershipLost({ message: "the lock session no longer holds the lock" })
          }
          yield* switchPhase("checking", "active")
        })
        // The first check one interval after the lock was taken, then one per interval.
        const heartbeats = Effect.sleep(heartbeatInterval).pipe(
          Effect.andThen(Effect.repeat(check, heartbeatPolicy)),
          Effect.andThen(Effect.never)
        )
        return Effect.raceFirst(heartbeats, Effect.mapError(session.dropped, toLost))
      }

      /**
       * Unlocks (bounded), flips PASSIVE, then tells the standbys so they try
       * at once. If unlocking fails the connection is closed first, which
       * makes the server release the lock. Announcing only after the flip
       * keeps "never two ACTIVE" on the fast path.
       */
      const release = (session: LockSession, reason: StepDownReason) =>
        Effect.gen(function*() {
          const unlocked = yield* session.first(sql.unlock, UnlockRow).pipe(
            Effect.tap(({ released }) =>
              released
                ? Effect.logInfo("[LOCK] 🔓 PostgreSQL advisory lock released")
                : Effect.logWarning("[LOCK] the lock session did not hold the lock at release")
            ),
            Effect.as(true),
            Effect.catch((error) =>
              Effect.logWarning(`[LOCK] unlock failed, closing the lock session instead: ${error.message}`).pipe(
                Effect.andThen(session.close),
                Effect.as(false)
              )
            )
          )
          yield* becomePassive(reason)
          if (unlocked) yield* Effect.ignore(session.first(sql.announceRelease, SentRow))
          yield* session.close
        })

      /** Closes the leadership scope; bounded, logs if services would not stop. */
      const closeLeadership = (
        leadership: Scope.Closeable,
        exit: Exit.Exit<unknown, unknown>,
        bound: Duration.Duration
      ) =>
        detachedWithin(Scope.close(leadership, exit), bound).pipe(
          Effect.catch(() =>
            Effect.logError(
              `[LOCK] leader-only services did not stop within ${Duration.format(bound)}; continuing without them`
            )
          )
        )

      /**
       * Holds leadership on a session that has just acquired the lock.
       * Returns how leadership ended (lost or released); fails with
       * `LeaderServicesFailed` after a failed start (the lock is released by then).
       */
      const lead = (
        session: LockSession
      ): Effect.Effect<"lost" | "released", LeaderServicesFailed, Exclude<R, LeaderState>> =>
        Effect.uninterruptibleMask((restore) =>
          Effect.gen(function*() {
            const leadership = yield* Scope.make()
            yield* Ref.set(lastPassiveWaitLog, Option.none())
            yield* becomeActive(session)
            const build = Layer.buildWithScope(leaderOnly, leadership).pipe(
              Effect.provideService(LeaderState, state),
              Effect.mapError((error) => new LeaderServicesFailed({ message: describeUnknown(error) }))
            )
            const exit = yield* Effect.exit(restore(
              Effect.raceFirst(
                build.pipe(Effect.andThen(setPhase("active")), Effect.andThen(Effect.never)),
                supervise(session)
              )
            ))
            if (Exit.isSuccess(exit)) return exit.value // unreachable: supervise never succeeds
            const cause = exit.cause
            const error = Cause.findErrorOption(cause)

            if (Option.isSome(error) && error.value._tag === "LeadershipLost") {
              // Lost: say so at once, then stop the services without draining.
              yield* Effect.logError(`[LOCK] ❌ leader lock lost: ${error.value.message}`)
              yield* becomePassive("lock_lost")
              yield* closeLeadership(leadership, Exit.fail(error.value), stopAfterLossTimeout)
              yield* setPhase("backoff")
              return "lost" as const
            }

            if (Cause.hasInterruptsOnly(cause)) {
              // Released (shutdown): drain, unlock, then flip. The session is
              // still watched while draining, so a loss meanwhile flips at once.
              yield* setPhase("stepping_down")
              yield* Effect.logInfo(
                `[LOCK] releasing leadership: stopping leader-only services (up to ${
                  Duration.format(config.shutdownTimeout)
                })`
              )
              const lostWhileDraining = yield* Ref.make(false)
              yield* Effect.raceFirst(
                closeLeadership(leadership, Exit.void, Duration.sum(config.shutdownTimeout, drainGrace)),
                supervise(session).pipe(
                  Effect.catch((lost) =>
                    Effect.gen(function*() {
                      yield* Ref.set(lostWhileDraining, true)
                      yield* Effect.logError(`[LOCK] ❌ leader lock lost while stopping: ${lost.message}`)
                      yield* becomePassive("lock_lost")
                    })
                  ),
                  Effect.andThen(Effect.never)
                )
              )
              if (!(yield* Ref.get(lostWhileDraining))) yield* release(session, "released")
              return "released" as const
            }

            // The leader-only services failed to start (or died doing so).
            const message = describeCause(cause)
            yield* Effect.logError(
              `[LOCK] leader-only services failed: ${message}; releasing the lock and backing off`
            )
            yield* setPhase("stepping_down")
            yield* closeLeadership(leadership, Exit.failCause(cause), stopAfterLossTimeout)
            yield* release(session, "leader_services_failed")
            yield* setPhase("backoff")
            return yield* new LeaderServicesFailed({ message })
          })
        )

      // --- the loop ---------------------------------------------------------

      /** One lock session: open, contend, lead. Ends when the session is done. */
      const term = Effect.scoped(
        Effect.gen(function*() {
          const session = yield* openSessionWithRetry
          yield* contend(session)
          return yield* lead(session)
        }).pipe(
          Effect.catchTag("LockSessionFailed", (error) =>
            Effect.gen(function*() {
              // Only reachable while PASSIVE (a failed try or a dropped session).
              yield* Effect.logWarning(`[LOCK] lock session failed while PASSIVE, reconnecting: ${error.message}`)
              yield* setPhase("backoff")
              yield* Effect.sleep(sessionFailurePause)
              return "session_failed" as const
            }))
        )
      ).pipe(
        // The session is closed by now; give a standby the first chance.
        Effect.tap((ended) => ended === "lost" ? Effect.sleep(lossCooldown) : Effect.void)
      )

      const controller = Effect.gen(function*() {
        yield* setPhase("waiting_for_database")
        yield* database.ready
        return yield* term.pipe(
          Effect.retry({ schedule: leaderFailurePolicy }),
          Effect.forever
        )
      }).pipe(
        Effect.ensuring(Effect.andThen(becomePassive("released"), setPhase("stopped"))),
        Effect.annotateLogs({ lock_key: key.toString() })
      )

      yield* Effect.forkScoped(controller)
      return state
    })
  )
