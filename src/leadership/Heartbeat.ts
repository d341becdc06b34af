/**
 * The heartbeat: while ACTIVE, prove every second that the lock session
 * still holds the lock, and notice at once when its connection drops.
 *
 * When to use: for the whole of a term, from the moment the lock is taken:
 * while the leader-only services start, while they run, and while they
 * drain. Its failure is the signal to fence (flip PASSIVE, stop the services).
 *
 * Details: each check is a `pg_locks` lookup (`sql/checkHeld.ts`) bounded by
 * `sessionQueryTimeout`, so a session that goes silent is given up after one
 * interval plus that timeout (~3 s); a dropped connection fails `dropped`
 * within milliseconds.
 */
import { Duration, Effect, Schedule, Schema } from "effect"
import type { LockSession, LockSessionFailed } from "./LockSession.ts"
import { checkHeld } from "./sql/checkHeld.ts"
import type { StatusBoard } from "./StatusBoard.ts"

/** This instance was ACTIVE and can no longer prove it holds the lock. */
export class LeadershipLost extends Schema.TaggedError<LeadershipLost>()("LeadershipLost", {
  message: Schema.String
}) {}

/** While ACTIVE: one ownership check per second. */
export const heartbeatInterval = Duration.seconds(1)
/** The repeat schedule of the checks, one per `heartbeatInterval`. */
export const heartbeatPolicy = Schedule.spaced(heartbeatInterval)

const toLost = (error: LockSessionFailed) => new LeadershipLost({ message: error.message })

/**
 * One check: fails with `LeadershipLost` if the session no longer holds the
 * lock on `key` or does not answer. `heartbeatInFlight` is set for its duration.
 */
export const heartbeat = Effect.fn("LeaderLock.heartbeat")(
  function*(session: LockSession, key: bigint, board: StatusBoard) {
    yield* board.setHeartbeatInFlight(true)
    const held = yield* checkHeld(session, key).pipe(
      Effect.mapError(toLost),
      Effect.ensuring(board.setHeartbeatInFlight(false))
    )
    if (!held) {
      return yield* new LeadershipLost({ message: "the lock session no longer holds the lock" })
    }
    yield* board.switchPhase("checking", "active")
  }
)

/**
 * Fails with `LeadershipLost` when the lock can no longer be proven; never
 * succeeds. The first check runs one interval after it starts, then one per
 * interval.
 */
export const superviseLock = (
  session: LockSession,
  key: bigint,
  board: StatusBoard
): Effect.Effect<never, LeadershipLost> => {
  const heartbeats = Effect.sleep(heartbeatInterval).pipe(
    Effect.andThen(Effect.repeat(heartbeat(session, key, board), heartbeatPolicy)),
    Effect.andThen(Effect.never)
  )
  return Effect.raceFirst(heartbeats, Effect.mapError(session.dropped, toLost))
}
