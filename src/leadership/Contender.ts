/**
 * The standby loop: contend for the lock on an open session until it is ours.
 *
 * When to use: right after opening a lock session; lead on that session once
 * `acquire` succeeds.
 *
 * Details: one `pg_try_advisory_lock` first; while the lock is held elsewhere
 * the standby then blocks in `pg_advisory_lock` (`sql/waitLock.ts`), which
 * PostgreSQL grants the moment the holder's session ends (a SIGKILL, a
 * terminated backend) or unlocks, so a takeover costs a round trip, not a
 * retry tick. Every `waitSlice` of the standby's own clock it cancels the wait
 * and tries again: that round trip proves the session still answers (a
 * connection that went silent is given up, as a failed try), and it is when
 * `PASSIVE_WAIT` is logged, with the holder's pid and application name, the
 * first time and then every `passiveWaitLogInterval` (not once per slice);
 * it is logged afresh after having been ACTIVE in between. A session whose
 * connection drops while waiting fails at once (`LockSession.dropped`).
 *
 * Gotchas: the wait runs on a detached fiber. Interrupting `acquire`
 * (shutdown) does not wait for the cancel round trip: the caller closes the
 * session, which ends the statement, and the server drops the queued backend
 * within `client_connection_check_interval` (`sql/applySettings.ts`).
 */
import { Clock, Duration, Effect, Fiber, Option, Ref } from "effect"
import { detachedWithin } from "./Bounded.ts"
import { type LockSession, LockSessionFailed, sessionQueryTimeout } from "./LockSession.ts"
import { findHolder } from "./sql/findHolder.ts"
import { tryLock } from "./sql/tryLock.ts"
import { armWait, disarmWait, waitLock } from "./sql/waitLock.ts"
import type { StatusBoard } from "./StatusBoard.ts"

/** While PASSIVE: how long one blocking wait lasts (standby's clock) before the standby re-proves its session. */
export const waitSlice = Duration.seconds(10)

/**
 * Server-side bound of one blocking wait (`lock_timeout`), in case the
 * standby's cancel never arrives; longer than `waitSlice`.
 */
export const serverWaitBound = Duration.seconds(60)

/** How often a still-waiting PASSIVE instance repeats `PASSIVE_WAIT`. */
export const passiveWaitLogInterval = Duration.seconds(30)

/** Contends for one lock key; keeps the `PASSIVE_WAIT` rhythm across sessions. */
export interface Contender {
  /**
   * Succeeds once `session` holds the lock; fails if the session breaks (a
   * failed try, or the connection dropping while waiting).
   */
  readonly acquire: (session: LockSession) => Effect.Effect<void, LockSessionFailed>
}

/** A contender for the lock on `key`, reporting its phases on `board`. */
export const makeContender = (key: bigint, board: StatusBoard): Effect.Effect<Contender> =>
  Effect.gen(function*() {
    /** Clock time of the last PASSIVE_WAIT line; reset on acquiring. */
    const lastPassiveWaitLog = yield* Ref.make(Option.none<number>())

    const describeHolder = (session: LockSession) =>
      findHolder(session, key).pipe(
        Effect.map((holder) =>
          holder === undefined
            ? "holder not visible"
            : `held by pid ${holder.pid}${
              holder.application_name ? ` (${JSON.stringify(holder.application_name)})` : ""
            }`
        ),
        Effect.catch(() => Effect.succeed("holder unknown"))
      )

    const logPassiveWait = (session: LockSession) =>
      Effect.gen(function*() {
        const now = yield* Clock.currentTimeMillis
        const last = yield* Ref.get(lastPassiveWaitLog)
        if (Option.isSome(last) && now - last.value < Duration.toMillis(passiveWaitLogInterval)) return
        yield* Ref.set(lastPassiveWaitLog, Option.some(now))
        const holder = yield* describeHolder(session)
        yield* Effect.logInfo(`[LOCK] ⏳ PASSIVE_WAIT: leader lock ${holder}; waiting for it to be released`)
      })

    /**
     * One try; when the lock is held elsewhere, the session is made ready to
     * wait (`armed` tells whether it already is) before the phase says PASSIVE,
     * so the wait starts on the clock the moment the phase is published.
     */
    const tryOnce = (session: LockSession, armed: boolean) =>
      Effect.gen(function*() {
        yield* board.setPhase("trying")
        const acquired = yield* tryLock(session, key)
        if (!acquired) {
          if (!armed) yield* armWait(session, serverWaitBound)
          yield* logPassiveWait(session)
          yield* board.setPhase("passive")
        }
        return acquired
      })

    /**
     * One blocking wait: true once the lock is granted; false when the slice
     * ran out (the wait is cancelled first, bounded by `sessionQueryTimeout`)
     * or the server's backstop ended it.
     */
    const waitOnce = (session: LockSession) =>
      Effect.gen(function*() {
        const wait = yield* Effect.forkDetach(waitLock(session, key))
        const granted = yield* Effect.raceFirst(
          Fiber.join(wait),
          Effect.raceFirst(Effect.as(Effect.sleep(waitSlice), false), session.dropped)
        )
        if (granted) return true
        yield* board.setPhase("trying")
        yield* detachedWithin(Fiber.interrupt(wait), sessionQueryTimeout).pipe(
          Effect.mapError(() => new LockSessionFailed({ message: "the lock wait could not be cancelled in time" }))
        )
        return false
      })

    const acquire = Effect.fn("LeaderLock.acquire")(function*(session: LockSession) {
      let armed = false
      while (!(yield* tryOnce(session, armed))) {
        armed = true
        if (yield* waitOnce(session)) break
      }
      if (armed) yield* disarmWait(session)
      yield* Ref.set(lastPassiveWaitLog, Option.none())
    })

    return { acquire }
  })
