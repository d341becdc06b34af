/**
 * The waiters of one process: who waits for a callback of which task, and
 * the signals a batch poller subscribes to. In memory only; what wakes them
 * is a stored callback (`KieCallbacks.record` on this instance, or its NOTIFY
 * from another one).
 *
 * When to use: `nextSignal` to wait for one task, `subscribe` to hear of
 * every task.
 *
 * Gotchas: a signal carries no data. Register (`nextSignal`), then read the
 * store, then wait: a callback stored between the read and the wait still
 * wakes the waiter, and one stored before the registration is found by the
 * read. After a reconnect of the listener `wakeAll` sends everyone back to the
 * store, because a NOTIFY sent meanwhile is lost.
 */
import { Deferred, Effect, PubSub, type Scope } from "effect"

/** What waiters hear: a callback arrived for a task, or "re-check everything" after a reconnect. */
export type CallbackSignal =
  | { readonly _tag: "Arrived"; readonly taskId: string }
  | { readonly _tag: "Resync" }

/** The waiters of this process. */
export interface CallbackWaiters {
  /**
   * Registers interest in a task now and returns an effect that completes on
   * the next callback signal for it (or a resync).
   */
  readonly nextSignal: (taskId: string) => Effect.Effect<Effect.Effect<void>, never, Scope.Scope>
  /** Every signal from now on. */
  readonly subscribe: Effect.Effect<PubSub.Subscription<CallbackSignal>, never, Scope.Scope>
  /** A callback for `taskId` was stored: wakes its waiters and tells subscribers. */
  readonly wake: (taskId: string) => Effect.Effect<void>
  /** Notifications may have been missed: wakes every waiter and tells subscribers to re-check. */
  readonly wakeAll: Effect.Effect<void>
}

/** Fresh waiters; the signal buffer keeps the newest 4096 signals for a slow subscriber. */
export const makeCallbackWaiters: Effect.Effect<CallbackWaiters> = Effect.gen(function*() {
  const signals = yield* PubSub.sliding<CallbackSignal>(4096)
  const waiters = new Map<string, Set<Deferred.Deferred<void>>>()

  const release = (set: Iterable<Deferred.Deferred<void>>) => {
    for (const deferred of set) Deferred.doneUnsafe(deferred, Effect.void)
  }

  const wake = (taskId: string) =>
    Effect.suspend(() => {
      const set = waiters.get(taskId)
      if (set !== undefined) {
        waiters.delete(taskId)
        release(set)
      }
      return Effect.asVoid(PubSub.publish(signals, { _tag: "Arrived", taskId }))
    })

  const wakeAll = Effect.suspend(() => {
    const all = [...waiters.values()]
    waiters.clear()
    for (const set of all) release(set)
    return Effect.asVoid(PubSub.publish(signals, { _tag: "Resync" }))
  })

  const register = (taskId: string) =>
    Effect.sync(() => {
      const deferred = Deferred.makeUnsafe<void>()
      let set = waiters.get(taskId)
      if (set === undefined) {
        set = new Set()
        waiters.set(taskId, set)
      }
      set.add(deferred)
      return deferred
    })

  const unregister = (taskId: string, deferred: Deferred.Deferred<void>) =>
    Effect.sync(() => {
      const set = waiters.get(taskId)
      if (set !== undefined) {
        set.delete(deferred)
        if (set.size === 0) waiters.delete(taskId)
      }
    })

  const nextSignal = (taskId: string) =>
    Effect.acquireRelease(register(taskId), (deferred) => unregister(taskId, deferred)).pipe(
      Effect.map((deferred) => Deferred.await(deferred))
    )

  return { nextSignal, subscribe: PubSub.subscribe(signals), wake, wakeAll }
})
