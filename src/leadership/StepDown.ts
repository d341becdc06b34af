/**
 * Stepping down: stopping the leader-only services and giving the lock back.
 *
 * When to use: at the end of every term. After a graceful end (shutdown, a
 * failed start) `release` the lock; after a loss there is nothing to release,
 * only `closeLeadership` without draining.
 *
 * Gotchas: both are bounded without waiting for what hangs (`Bounded.ts`): a
 * service that will not stop, or a lock session gone silent, must not keep
 * the instance from stepping down.
 */
import { Duration, Effect, type Exit, Scope } from "effect"
import { detachedWithin } from "./Bounded.ts"
import type { LockSession } from "./LockSession.ts"
import { announceRelease } from "./sql/announceRelease.ts"
import { unlock } from "./sql/unlock.ts"
import type { StatusBoard, StepDownReason } from "./StatusBoard.ts"

/** After a loss or a failed start, leader-only services stop without draining; this bounds it. */
export const stopAfterLossTimeout = Duration.seconds(5)

/** Added to SHUTDOWN_TIMEOUT_MS, which the services themselves honour, to bound a graceful drain. */
export const drainGrace = Duration.seconds(1)

/**
 * Closes the leadership scope with `exit` (`Exit.void` drains, a failure
 * stops at once); gives up after `bound`, logging that the services would
 * not stop.
 */
export const closeLeadership = (
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
 * Flips PASSIVE, then unlocks (bounded), then tells the standbys, then closes
 * the session. The flip comes first because a standby blocked in
 * `pg_advisory_lock` is granted the lock by the unlock itself, before this
 * instance hears back: flipping after it would leave two ACTIVE for a moment.
 * If unlocking fails the connection is closed instead, which makes the server
 * release the lock. The NOTIFY is for standbys between two waits (and for
 * older versions that poll).
 */
export const release = (session: LockSession, key: bigint, board: StatusBoard, reason: StepDownReason) =>
  Effect.gen(function*() {
    yield* board.becomePassive(reason)
    const unlocked = yield* unlock(session, key).pipe(
      Effect.tap((released) =>
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
    if (unlocked) yield* Effect.ignore(announceRelease(session, key))
    yield* session.close
  })
