/**
 * The callback signals of one process: what a batch poller subscribes to to
 * hear that a callback arrived. In memory only; what sends them is a stored
 * callback (`KieCallbacks.record` on this instance, or its NOTIFY from
 * another one) and each (re)connect of the listener.
 *
 * When to use: `subscribe` to hear of every task's callback; `wake` and
 * `wakeAll` are for the store and its listener.
 *
 * Gotchas: a signal carries no data. Subscribe first, then read the store,
 * then take signals: a callback stored between the read and the take is still
 * heard, and one stored before the subscription is found by the read. After
 * a reconnect of the listener `wakeAll` sends everyone back to the store,
 * because a NOTIFY sent meanwhile is lost. A subscriber that falls more than
 * 4096 signals behind loses the oldest ones, so it must also poll.
 */
import { Effect, PubSub, type Scope } from "effect"

/** What subscribers hear: a callback arrived for a task, or "re-check everything" after a reconnect. */
export type CallbackSignal =
  | { readonly _tag: "Arrived"; readonly taskId: string }
  | { readonly _tag: "Resync" }

/** The callback signals of this process. */
export interface CallbackSignals {
  /** Every signal from now on. */
  readonly subscribe: Effect.Effect<PubSub.Subscription<CallbackSignal>, never, Scope.Scope>
  /** A callback for `taskId` was stored: tells subscribers. */
  readonly wake: (taskId: string) => Effect.Effect<void>
  /** Notifications may have been missed: tells subscribers to re-check the store. */
  readonly wakeAll: Effect.Effect<void>
}

/** Fresh signals; the buffer keeps the newest 4096 signals for a slow subscriber. */
export const makeCallbackSignals: Effect.Effect<CallbackSignals> = Effect.gen(function*() {
  const signals = yield* PubSub.sliding<CallbackSignal>(4096)
  return {
    subscribe: PubSub.subscribe(signals),
    wake: (taskId) => Effect.asVoid(PubSub.publish(signals, { _tag: "Arrived", taskId })),
    wakeAll: Effect.asVoid(PubSub.publish(signals, { _tag: "Resync" }))
  }
})
