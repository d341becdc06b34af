/**
 * The createTask budget on its own, driven by TestClock: no waiting in real
 * time, no network.
 */
import { assert, describe, it } from "@effect/vitest"
import { Deferred, Effect, Fiber, Ref } from "effect"
import { TestClock } from "effect/testing"
import * as KieRateBudget from "../src/kie/KieRateBudget.ts"

/** Lets forked fibers run until they block; no clock movement. */
const settle = Effect.gen(function*() {
  for (let i = 0; i < 20; i++) yield* Effect.yieldNow
})

describe("KieRateBudget", () => {
  it.effect("awaitFreeSlot: at once while a slot is free; otherwise when one frees up; it takes none itself", () =>
    Effect.gen(function*() {
      const budget = yield* KieRateBudget.make({ count: 2, window: "10 seconds", margin: "50 millis" })
      yield* budget.awaitFreeSlot
      yield* budget.withPermit(Effect.void)
      yield* budget.awaitFreeSlot
      assert.strictEqual((yield* budget.snapshot).used, 1, "waiting for a free slot takes none")
      yield* budget.withPermit(Effect.void)
      const waiter = yield* Effect.forkChild(budget.awaitFreeSlot)
      yield* settle
      assert.isUndefined(waiter.pollUnsafe(), "both slots are taken")
      yield* TestClock.adjust("10 seconds")
      yield* settle
      assert.isUndefined(waiter.pollUnsafe(), "not before window + margin")
      yield* TestClock.adjust("50 millis")
      yield* Fiber.join(waiter)
      assert.strictEqual((yield* budget.snapshot).used, 0)
    }))

  it.effect("awaitFreeSlot counts a caller already waiting for the slot that frees", () =>
    Effect.gen(function*() {
      const budget = yield* KieRateBudget.make({ count: 1, window: "1 second", margin: 0 })
      const gate = yield* Deferred.make<void>()
      const inFlight = yield* Effect.forkChild(budget.withPermit(Deferred.await(gate)))
      const queued = yield* Effect.forkChild(budget.withPermit(Effect.void))
      yield* settle
      const waiter = yield* Effect.forkChild(budget.awaitFreeSlot)
      yield* Deferred.succeed(gate, undefined)
      yield* Fiber.join(inFlight)
      yield* TestClock.adjust("1 second")
      yield* Fiber.join(queued)
      yield* settle
      assert.isUndefined(waiter.pollUnsafe(), "the queued caller took the freed slot")
      yield* TestClock.adjust("1 second")
      yield* Fiber.join(waiter)
    }))

  it.effect("21 calls in 10 s: 20 run at once, the 21st waits for window + margin after the first completed", () =>
    Effect.gen(function*() {
      const budget = yield* KieRateBudget.make({ count: 20, window: "10 seconds", margin: "50 millis" })
      const started = yield* Ref.make<Array<number>>([])
      const call = (i: number) => budget.withPermit(Ref.update(started, (xs) => [...xs, i]))
      const fibers = yield* Effect.forEach(Array.from({ length: 21 }, (_, i) => i), (i) => Effect.forkChild(call(i)))
      yield* settle
      assert.strictEqual((yield* Ref.get(started)).length, 20)
      assert.isUndefined(fibers[20]!.pollUnsafe())
      assert.deepStrictEqual(yield* budget.snapshot, {
        count: 20,
        windowMillis: 10_000,
        used: 20,
        inFlight: 0,
        waiting: 1
      })

      yield* TestClock.adjust("10 seconds")
      yield* settle
      assert.strictEqual((yield* Ref.get(started)).length, 20, "the margin is not over yet")

      yield* TestClock.adjust("50 millis")
      yield* Fiber.join(fibers[20]!)
      assert.deepStrictEqual((yield* Ref.get(started)).slice(-1), [20])
    }))

  it.effect("waiters are served first come, first served", () =>
    Effect.gen(function*() {
      const budget = yield* KieRateBudget.make({ count: 1, window: "1 second", margin: 0 })
      const order = yield* Ref.make<Array<string>>([])
      const call = (name: string) => budget.withPermit(Ref.update(order, (xs) => [...xs, name]))
      yield* call("first")
      const fibers: Array<Fiber.Fiber<void>> = []
      for (const name of ["a", "b", "c", "d"]) {
        fibers.push(yield* Effect.forkChild(call(name)))
        yield* settle
      }
      for (let i = 0; i < 4; i++) {
        yield* TestClock.adjust("1 second")
        yield* settle
      }
      yield* Fiber.joinAll(fibers)
      assert.deepStrictEqual(yield* Ref.get(order), ["first", "a", "b", "c", "d"])
    }))

  it.effect("a slot stays taken while its request is in flight, and for a window after it completes", () =>
    Effect.gen(function*() {
      const budget = yield* KieRateBudget.make({ count: 1, window: "10 seconds", margin: "50 millis" })
      const gate = yield* Deferred.make<void>()
      const slow = yield* Effect.forkChild(budget.withPermit(Deferred.await(gate)))
      yield* settle
      const second = yield* Effect.forkChild(budget.withPermit(Effect.void))
      yield* TestClock.adjust("1 minute")
      yield* settle
      assert.isUndefined(second.pollUnsafe(), "still waiting while the first request is in flight")

      yield* Deferred.succeed(gate, undefined)
      yield* Fiber.join(slow)
      yield* TestClock.adjust("10 seconds")
      yield* settle
      assert.isUndefined(second.pollUnsafe(), "the window counts from the completion")
      yield* TestClock.adjust("50 millis")
      yield* Fiber.join(second)
    }))

  it.effect("a failing request also holds its slot", () =>
    Effect.gen(function*() {
      const budget = yield* KieRateBudget.make({ count: 1, window: "10 seconds", margin: 0 })
      yield* budget.withPermit(Effect.fail("boom")).pipe(Effect.flip)
      const next = yield* Effect.forkChild(budget.withPermit(Effect.void))
      yield* settle
      assert.isUndefined(next.pollUnsafe())
      yield* TestClock.adjust("10 seconds")
      yield* Fiber.join(next)
    }))

  it.effect("an earlier leader's sends hold slots until sentAt + window + margin + slack; expired ones none", () =>
    Effect.gen(function*() {
      const budget = yield* KieRateBudget.make({ count: 3, window: "10 seconds", margin: "50 millis" })
      yield* TestClock.setTime(100_000)
      // Sent 9 s ago, 2 s ago, and 20 s ago (long out of the window).
      assert.strictEqual(yield* budget.recordEarlierSends([91_000, 98_000, 80_000]), 2)
      assert.strictEqual((yield* budget.snapshot).used, 2)
      const started = yield* Ref.make<Array<number>>([])
      const call = budget.withPermit(
        Effect.flatMap(
          Effect.clockWith((clock) => clock.currentTimeMillis),
          (now) => Ref.update(started, (xs) => [...xs, now])
        )
      )
      const fibers = yield* Effect.forEach([0, 1, 2], () => Effect.forkChild(call))
      yield* settle
      assert.deepStrictEqual(yield* Ref.get(started), [100_000], "one slot was free")
      // 91 000 + 10 000 + 50 + 1 000 = 102 050: the next slot frees then, not at 101 050.
      yield* TestClock.setTime(102_049)
      yield* settle
      assert.lengthOf(yield* Ref.get(started), 1)
      yield* TestClock.setTime(102_050)
      yield* settle
      assert.deepStrictEqual(yield* Ref.get(started), [100_000, 102_050])
      yield* TestClock.setTime(109_050)
      yield* Fiber.joinAll(fibers)
      assert.deepStrictEqual(yield* Ref.get(started), [100_000, 102_050, 109_050])
    }))

  it.effect("earlier sends never take more than the whole budget; the slots that free last are kept", () =>
    Effect.gen(function*() {
      const budget = yield* KieRateBudget.make({ count: 2, window: "1 second", margin: 0 })
      yield* TestClock.setTime(10_000)
      // The process's own request, completed now: its slot frees at 11 000.
      yield* budget.withPermit(Effect.void)
      // The database lists it again (sent at 10 000: held to 12 000 with the slack), twice, and a later send (to 12 500).
      assert.strictEqual(yield* budget.recordEarlierSends([10_000, 10_000, 10_500]), 2, "the two that free last")
      assert.strictEqual((yield* budget.snapshot).used, 2)
      const started = yield* Ref.make<Array<number>>([])
      const fiber = yield* Effect.forkChild(
        budget.withPermit(
          Effect.flatMap(
            Effect.clockWith((clock) => clock.currentTimeMillis),
            (now) => Ref.update(started, (xs) => [...xs, now])
          )
        )
      )
      yield* TestClock.setTime(11_999)
      yield* settle
      assert.deepStrictEqual(yield* Ref.get(started), [], "the slot of 11 000 was replaced: 12 000 and 12 500 remain")
      yield* TestClock.setTime(12_000)
      yield* Fiber.join(fiber)
      assert.deepStrictEqual(yield* Ref.get(started), [12_000])
    }))

  it.effect("after a 429 the whole budget pauses for a full window", () =>
    Effect.gen(function*() {
      const budget = yield* KieRateBudget.make({ count: 20, window: "10 seconds", margin: "50 millis" })
      yield* budget.withPermit(Effect.void)
      yield* budget.penalize
      const next = yield* Effect.forkChild(budget.withPermit(Effect.void))
      yield* TestClock.adjust("10 seconds")
      yield* settle
      assert.isUndefined(next.pollUnsafe())
      yield* TestClock.adjust("50 millis")
      yield* Fiber.join(next)
    }))

  it.effect("an interrupted waiter gives up its turn without using a slot", () =>
    Effect.gen(function*() {
      const budget = yield* KieRateBudget.make({ count: 1, window: "10 seconds", margin: 0 })
      yield* budget.withPermit(Effect.void)
      const ran = yield* Ref.make<Array<string>>([])
      const quitter = yield* Effect.forkChild(budget.withPermit(Ref.update(ran, (xs) => [...xs, "quitter"])))
      yield* settle
      const patient = yield* Effect.forkChild(budget.withPermit(Ref.update(ran, (xs) => [...xs, "patient"])))
      yield* settle
      yield* Fiber.interrupt(quitter)
      assert.strictEqual((yield* budget.snapshot).waiting, 1)
      yield* TestClock.adjust("10 seconds")
      yield* Fiber.join(patient)
      assert.deepStrictEqual(yield* Ref.get(ran), ["patient"])
      assert.strictEqual((yield* budget.snapshot).used, 1)
    }))
})
