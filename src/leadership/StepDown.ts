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
 * Unlocks (bounded), flips PASSIVE, then tells the standbys so they try at
 * once, then closes the session. If unlocking fails the connection is closed
 * first, which makes the server release the lock. Announcing only after the
 * flip keeps "never two ACTIVE" on the fast path.
 */
export const release = (session: LockSession, key: bigint, board: StatusBoard, reason: StepDownReason) =>
  Effect.gen(function*() {
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
    yield* board.becomePassive(reason)
    if (unlocked) yield* Effect.ignore(announceRelease(session, key))
    yield* session.close
  })
