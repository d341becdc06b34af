/**
 * Leader election: exactly one instance is ACTIVE and runs the leader-only
 * services; the others stay PASSIVE, healthy, and ready to take over.
 *
 * The leader is whoever holds a session-level PostgreSQL advisory lock
 * (`pg_try_advisory_lock(LEADER_LOCK_KEY)`) on a dedicated connection, the
 * lock session. For the life of the layer one controller fiber runs terms:
 * open a lock session, contend on it until the lock is ours, lead on it until
 * the term ends, then start over on a new session.
 *
 * The parts, each in its own module, depend on each other one way only:
 *
 * - `LockSession.ts`: the dedicated connection and its statements
 *   (`sql/<verb>.ts`: tryLock, waitLock, checkHeld, unlock, announceRelease,
 *   findHolder, applySettings);
 * - `Contender.ts`: the standby loop (`PASSIVE_WAIT`);
 * - `Heartbeat.ts`: proving the lock while ACTIVE (self-fencing);
 * - `Leadership.ts`: the leadership scope that runs the leader-only services,
 *   and how each term ends; `StepDown.ts`: draining and releasing;
 * - `StatusBoard.ts`: `LeaderState`, the flip log lines, metrics, /health;
 * - this module: the controller loop that ties them together.
 *
 * The controller's phases (`LeaderStatus.phase`; "active?" is `LeaderState.active`):
 *
 * | phase                | active? | doing                                | next                                   |
 * | -------------------- | ------- | ------------------------------------ | -------------------------------------- |
 * | waiting_for_database | no      | waiting for `Database.ready`         | connecting                             |
 * | connecting           | no      | opening a lock session               | trying; backoff if it cannot           |
 * | trying               | no      | `pg_try_advisory_lock`, ends a wait  | starting; passive; backoff on failure  |
 * | passive              | no      | in `pg_advisory_lock`, 10 s at most  | starting; trying; backoff if dropped   |
 * | starting             | yes     | building the leader-only services    | active; stepping_down                  |
 * | active               | yes     | services running, next heartbeat due | checking; stepping_down                |
 * | checking             | yes     | heartbeat in flight                  | active; stepping_down                  |
 * | stepping_down        | flips   | stopping services, unlocking (below) | backoff; stopped                       |
 * | backoff              | no      | waiting for the next term (below)    | connecting                             |
 * | stopped              | no      | the layer was released               | (none)                                 |
 *
 * How long "backoff" lasts depends on what ended the term: `sessionRetryPolicy`
 * while the session cannot be opened, `sessionFailurePause` after a session
 * failed while PASSIVE, `lossCooldown` after a loss (so a standby takes over
 * first), `leaderFailurePolicy` after the leader-only services failed to start.
 * How "stepping_down" proceeds (drain or not, unlock or not, in which order)
 * is the table in `Leadership.ts`; in every case the flip to PASSIVE comes
 * before anything a standby could act on.
 *
 * The flips log the operator-facing markers `[LOCK]`, `[LOCK_CONTROLLER]
 * State transition: ...` and `[STATE_SYNC] ...` (`StatusBoard.ts`,
 * `docs/contract.md`).
 *
 * Every step that talks to the database is bounded without waiting for the
 * interrupted query (`Bounded.ts`): a connection that went silent must not
 * delay fencing or shutdown.
 */
import { PgClient } from "@effect/sql-pg"
import { Duration, Effect, Layer } from "effect"
import { Database } from "../database/Database.ts"
import { AppConfig } from "../platform/AppConfig.ts"
import { Health } from "../observability/Health.ts"
import { makeOutageLog } from "../platform/ProblemLog.ts"
import { backoff } from "../platform/Retry.ts"
import { retryLogged } from "../platform/Supervised.ts"
import { makeContender } from "./Contender.ts"
import { makeLeadership } from "./Leadership.ts"
import { LeaderState } from "./LeaderState.ts"
import { lockSessionOptions, openLockSession } from "./LockSession.ts"
import { makeStatusBoard } from "./StatusBoard.ts"

/** The public face of leader election (defined in `LeaderState.ts`), re-exported for callers of `layer`. */
export { type LeaderPhase, LeaderState, type LeaderStatus, waitingPhases } from "./LeaderState.ts"
/** The heartbeat's schedule: one ownership check per second while ACTIVE. */
export { heartbeatPolicy } from "./Heartbeat.ts"

/** While the lock session cannot be opened (database down, refusing connections). */
export const sessionRetryPolicy = backoff("1 second", "10 seconds")

/**
 * After leader-only services failed to start: back off so a persistent
 * failure (a bad token, say) does not make the instances pass the lock around
 * in a tight loop.
 */
export const leaderFailurePolicy = backoff("2 seconds", "60 seconds")

/** Pause before reopening a lock session that failed while PASSIVE. */
const sessionFailurePause = Duration.seconds(1)

/**
 * After losing the lock, wait this long before contending again, so a standby
 * takes over from a holder whose session just died (it may be the one in
 * trouble): standbys are queued in `pg_advisory_lock` and get it at once, or
 * at their next try when they were between waits. A lone instance simply
 * resumes after it.
 */
export const lossCooldown = Duration.seconds(2)

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

      const board = yield* makeStatusBoard(key)
      yield* health.registerLive(board.health)
      const contender = yield* makeContender(key, board)
      const lead = makeLeadership({ key, board, leaderOnly, shutdownTimeout: config.shutdownTimeout })

      const options = lockSessionOptions(pg.config, config.instanceId)
      /** Opens a lock session, retrying with backoff; logs once per outage. */
      const openSession = retryLogged(
        board.setPhase("connecting").pipe(
          Effect.andThen(openLockSession(options)),
          Effect.tapError(() => board.setPhase("backoff"))
        ),
        sessionRetryPolicy,
        {
          failing: (error) =>
            `[LOCK] cannot open the lock session; staying PASSIVE and retrying with backoff: ${error.message}`,
          recovered: "[LOCK] lock session open again; contending for the leader lock"
        },
        makeOutageLog()
      )

      /** One lock session: open, contend, lead. Ends when the session is done. */
      const term = Effect.scoped(
        Effect.gen(function*() {
          const session = yield* openSession
          yield* contender.acquire(session)
          return yield* lead(session)
        }).pipe(
          Effect.catchTag("LockSessionFailed", (error) =>
            Effect.gen(function*() {
              // Only reachable while PASSIVE (a failed try or a dropped session).
              yield* Effect.logWarning(`[LOCK] lock session failed while PASSIVE, reconnecting: ${error.message}`)
              yield* board.setPhase("backoff")
              yield* Effect.sleep(sessionFailurePause)
              return "session_failed" as const
            }))
        )
      ).pipe(
        // The session is closed by now; give a standby the first chance.
        Effect.tap((ended) => ended === "lost" ? Effect.sleep(lossCooldown) : Effect.void)
      )

      const controller = Effect.gen(function*() {
        yield* board.setPhase("waiting_for_database")
        yield* database.ready
        return yield* term.pipe(
          Effect.retry({ schedule: leaderFailurePolicy }),
          Effect.forever
        )
      }).pipe(
        Effect.ensuring(Effect.andThen(board.becomePassive("released"), board.setPhase("stopped"))),
        Effect.annotateLogs({ lock_key: key.toString() })
      )

      yield* Effect.forkScoped(controller)
      return board.state
    })
  )
