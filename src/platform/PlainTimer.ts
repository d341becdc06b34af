/**
 * A one-shot timer on the `Clock` of the context it was made in, started
 * from plain code.
 *
 * When to use: a bound on a wait that plain callbacks keep (no fiber waits,
 * so `Effect.timeout` has nothing to time out), on a hot path where a fiber
 * per wait is what the plain code avoids (`Inbox.storeUnsafe`).
 *
 * Details: on the live clock it is a `setTimeout`, no fiber. Under another
 * clock (a `TestClock`) it is a fiber sleeping on that clock, so tests move
 * it with `TestClock.adjust` like every other timeout.
 */
import { Clock, Context, Duration, Effect } from "effect"

/** Calls `onTime` after `duration` unless cancelled first; returns the cancel. */
export type StartTimer = (duration: Duration.Duration, onTime: () => void) => () => void

/** The clock every fiber has unless another is provided (`Date.now` and `setTimeout`). */
export const liveClock = Context.get(Context.empty(), Clock.Clock)
/** Node's longest timer; a longer wait takes the clock's general path. */
export const MAX_TIMER_MILLIS = 2 ** 31 - 1

/** Whether a wait of `millis` on `clock` can be a plain `setTimeout`: the live clock, within Node's limit. */
export const isPlainTimer = (clock: Clock.Clock, millis: number): boolean =>
  clock === liveClock && millis <= MAX_TIMER_MILLIS

/** Timers on the current context's clock. */
export const plainTimer: Effect.Effect<StartTimer> = Effect.gen(function*() {
  const clock = yield* Effect.clockWith(Effect.succeed)
  const runFork = Effect.runForkWith(yield* Effect.context<never>())
  return (duration, onTime) => {
    const millis = Duration.toMillis(duration)
    if (isPlainTimer(clock, millis)) {
      const timer = setTimeout(onTime, millis)
      return () => clearTimeout(timer)
    }
    const fiber = runFork(Effect.andThen(Effect.sleep(duration), Effect.sync(onTime)))
    return () => fiber.interruptUnsafe()
  }
})
