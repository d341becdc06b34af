/**
 * A term of leadership on a session that has just taken the lock: build the
 * leader-only services in a fresh leadership scope, keep proving the lock
 * while they run, and step down when the term ends.
 *
 * When to use: once per successful `Contender.acquire`, on the same session.
 *
 * Details: a term ends one of three ways, each with its own order:
 *
 * | end      | cause                                | order                                        | result     |
 * | -------- | ------------------------------------ | -------------------------------------------- | ---------- |
 * | lost     | heartbeat failed, session dropped    | log, flip, stop services (no drain)          | "lost"     |
 * | released | the layer's scope closes (interrupt) | drain services, flip, unlock, announce       | "released" |
 * | failed   | `leaderOnly` failed or died at start | log, stop (no drain), flip, unlock, announce | fails      |
 *
 * "flip" is the switch to PASSIVE with its log lines (`StatusBoard.ts`);
 * draining is bounded by SHUTDOWN_TIMEOUT_MS plus `drainGrace`, stopping
 * without draining by `stopAfterLossTimeout`; a failed start fails the term
 * with `LeaderServicesFailed`.
 *
 * While draining on release the heartbeat keeps running: a loss meanwhile
 * flips PASSIVE at once, and the lock is then not released (it is gone).
 *
 * Gotchas: a `leaderOnly` build failure or defect never crashes the process;
 * the caller backs off (`leaderFailurePolicy`) before contending again, so a
 * persistent failure does not pass the lock around in a tight loop.
 */
import { Cause, Duration, Effect, Exit, Layer, Option, Ref, Schema, Scope } from "effect"
import { describeUnknown } from "../database/SqlErrors.ts"
import { type LeadershipLost, superviseLock } from "./Heartbeat.ts"
import { LeaderState } from "./LeaderState.ts"
import type { LockSession } from "./LockSession.ts"
import type { StatusBoard } from "./StatusBoard.ts"
import { closeLeadership, drainGrace, release, stopAfterLossTimeout } from "./StepDown.ts"

/** Building the leader-only layer failed or died. */
export class LeaderServicesFailed extends Schema.TaggedError<LeaderServicesFailed>()("LeaderServicesFailed", {
  message: Schema.String
}) {}

/** How a term that did not fail ended. */
export type TermEnd = "lost" | "released"

/** What a term needs. */
export interface LeadershipOptions<E, R> {
  readonly key: bigint
  readonly board: StatusBoard
  /** SHUTDOWN_TIMEOUT_MS: how long the services may drain on release. */
  readonly shutdownTimeout: Duration.Duration
  /** The leader-only services, built anew for every term. */
  readonly leaderOnly: Layer.Layer<never, E, R>
}

const describeCause = (cause: Cause.Cause<unknown>): string => {
  const error = Cause.findErrorOption(cause)
  if (Option.isSome(error)) return describeUnknown(error.value)
  const defect = Cause.findDefect(cause)
  if (defect._tag === "Success") return `defect: ${describeUnknown(defect.success)}`
  return Cause.hasInterrupts(cause) ? "interrupted" : "unknown failure"
}

/** Returns `lead`: one term on a session that holds the lock. */
export const makeLeadership = <E, R>({ board, key, leaderOnly, shutdownTimeout }: LeadershipOptions<E, R>) => {
  /** Lost: say so at once, then stop the services without draining. */
  const endLost = (leadership: Scope.Closeable, lost: LeadershipLost) =>
    Effect.gen(function*() {
      yield* Effect.logError(`[LOCK] ❌ leader lock lost: ${lost.message}`)
      yield* board.becomePassive("lock_lost")
      yield* closeLeadership(leadership, Exit.fail(lost), stopAfterLossTimeout)
      yield* board.setPhase("backoff")
      return "lost" as const
    })

  /**
   * Released (shutdown): drain, flip, then unlock. The session is still
   * watched while draining, so a loss meanwhile flips at once.
   */
  const endReleased = (session: LockSession, leadership: Scope.Closeable) =>
    Effect.gen(function*() {
      yield* board.setPhase("stepping_down")
      yield* Effect.logInfo(
        `[LOCK] releasing leadership: stopping leader-only services (up to ${Duration.format(shutdownTimeout)})`
      )
      const lostWhileDraining = yield* Ref.make(false)
      yield* Effect.raceFirst(
        closeLeadership(leadership, Exit.void, Duration.sum(shutdownTimeout, drainGrace)),
        superviseLock(session, key, board).pipe(
          Effect.catch((lost) =>
            Effect.gen(function*() {
              yield* Ref.set(lostWhileDraining, true)
              yield* Effect.logError(`[LOCK] ❌ leader lock lost while stopping: ${lost.message}`)
              yield* board.becomePassive("lock_lost")
            })
          ),
          Effect.andThen(Effect.never)
        )
      )
      if (!(yield* Ref.get(lostWhileDraining))) yield* release(session, key, board, "released")
      return "released" as const
    })

  /** The leader-only services failed to start (or died doing so). */
  const endFailed = (session: LockSession, leadership: Scope.Closeable, cause: Cause.Cause<unknown>) =>
    Effect.gen(function*() {
      const message = describeCause(cause)
      yield* Effect.logError(`[LOCK] leader-only services failed: ${message}; releasing the lock and backing off`)
      yield* board.setPhase("stepping_down")
      yield* closeLeadership(leadership, Exit.failCause(cause), stopAfterLossTimeout)
      yield* release(session, key, board, "leader_services_failed")
      yield* board.setPhase("backoff")
      return yield* new LeaderServicesFailed({ message })
    })

  /** Ends the term by how the services and the heartbeat ended. */
  const stepDown = Effect.fn("LeaderLock.stepDown")(
    function*(
      session: LockSession,
      leadership: Scope.Closeable,
      cause: Cause.Cause<LeaderServicesFailed | LeadershipLost>
    ) {
      const error = Cause.findErrorOption(cause)
      if (Option.isSome(error) && error.value._tag === "LeadershipLost") return yield* endLost(leadership, error.value)
      if (Cause.hasInterruptsOnly(cause)) return yield* endReleased(session, leadership)
      return yield* endFailed(session, leadership, cause)
    }
  )

  /**
   * Holds leadership on a session that has just acquired the lock. Returns
   * how leadership ended; fails with `LeaderServicesFailed` after a failed
   * start (the lock is released by then).
   */
  const lead = (session: LockSession): Effect.Effect<TermEnd, LeaderServicesFailed, Exclude<R, LeaderState>> =>
    Effect.uninterruptibleMask((restore) =>
      Effect.gen(function*() {
        const leadership = yield* Scope.make()
        yield* board.becomeActive(session.pid)
        const build = Layer.buildWithScope(leaderOnly, leadership).pipe(
          Effect.provideService(LeaderState, board.state),
          Effect.mapError((error) => new LeaderServicesFailed({ message: describeUnknown(error) }))
        )
        const exit = yield* Effect.exit(restore(
          Effect.raceFirst(
            build.pipe(Effect.andThen(board.setPhase("active")), Effect.andThen(Effect.never)),
            superviseLock(session, key, board)
          )
        ))
        if (Exit.isSuccess(exit)) return exit.value // unreachable: superviseLock never succeeds
        return yield* stepDown(session, leadership, exit.cause)
      })
    )

  return lead
}
