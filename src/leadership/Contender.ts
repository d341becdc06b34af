/**
 * The standby loop: contend for the lock on an open session until it is ours.
 *
 * When to use: right after opening a lock session; lead on that session once
 * `acquire` succeeds.
 *
 * Details: one `pg_try_advisory_lock` per `contendInterval`, and at once when
 * the holder announces its release (NOTIFY). While the lock is held elsewhere
 * the contender logs `PASSIVE_WAIT` with the holder's pid and application
 * name, the first time and then every `passiveWaitLogInterval` (not once per
 * try); it logs it afresh after having been ACTIVE in between.
 */
import { Clock, Duration, Effect, Option, Ref } from "effect"
import type { LockSession, LockSessionFailed } from "./LockSession.ts"
import { findHolder } from "./sql/findHolder.ts"
import { tryLock } from "./sql/tryLock.ts"
import type { StatusBoard } from "./StatusBoard.ts"

/** While PASSIVE: one `pg_try_advisory_lock` per second (sooner when the holder announces its release). */
export const contendInterval = Duration.seconds(1)

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
        yield* Effect.logInfo(`[LOCK] ⏳ PASSIVE_WAIT: leader lock ${holder}; trying again every second`)
      })

    const tryOnce = (session: LockSession) =>
      Effect.gen(function*() {
        yield* board.setPhase("trying")
        const acquired = yield* tryLock(session, key)
        if (!acquired) {
          yield* logPassiveWait(session)
          yield* board.setPhase("passive")
        }
        return acquired
      })

    const acquire = Effect.fn("LeaderLock.acquire")(function*(session: LockSession) {
      while (!(yield* tryOnce(session))) {
        yield* Effect.raceFirst(Effect.sleep(contendInterval), session.released(key))
      }
      yield* Ref.set(lastPassiveWaitLog, Option.none())
    })

    return { acquire }
  })
