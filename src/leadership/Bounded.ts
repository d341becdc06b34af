/**
 * Waiting for something on the lock session without being held up by it.
 *
 * Gotchas: interrupting a statement on a silent connection waits for the
 * cancel round trip (seconds), and closing a scope runs its finalizers
 * uninterruptibly, so a plain `Effect.timeout` would wait for exactly the
 * thing that hangs. A connection that went silent must not delay fencing or
 * shutdown.
 */
import { type Duration, Effect, Fiber } from "effect"

/**
 * Runs `effect` on a detached fiber and waits for it at most `timeout`
 * (failing with `TimeoutError` then). The detached fiber ends when its
 * connection is closed (which the caller always does after a failed session
 * statement) or when its finalizers finish.
 */
export const detachedWithin = <A, E>(effect: Effect.Effect<A, E>, timeout: Duration.Duration) =>
  Effect.flatMap(Effect.forkDetach(effect), (fiber) => Fiber.join(fiber).pipe(Effect.timeout(timeout)))
