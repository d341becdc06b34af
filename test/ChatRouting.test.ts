/**
 * Per-chat routing (`dispatch/ChatRouting.ts`) and the term's in-memory
 * accounting (`dispatch/InFlight.ts`) driven alone: items made by hand, a run
 * that records what it does and waits where the test says.
 */
import { assert, describe, it } from "@effect/vitest"
import { Deferred, Effect, Fiber, FiberSet, Option, Semaphore } from "effect"
import { makeChatRouting, workerFor } from "../src/dispatch/ChatRouting.ts"
import { CLAIMS_PER_CHAT } from "../src/inbox/Inbox.ts"
import { type Item, makeInFlight } from "../src/dispatch/InFlight.ts"
import type { Update } from "../src/telegram/TelegramUpdate.ts"

const WORKERS = 4

const itemOf = (updateId: number, chatKey: string): Item => ({
  claimed: { updateId, chatId: Number(chatKey), kind: "message", payload: {}, attempts: 1, receivedAt: Option.none() },
  update: { update_id: updateId } as Update,
  chatKey,
  worker: workerFor(chatKey, WORKERS),
  state: "queued",
  started: false,
  claimedAtMillis: 0
})

/** Routing whose runs record "start"/"end" per update and hold the worker until `release(updateId)`. */
const recordingRouting = Effect.gen(function*() {
  let roomSignals = 0
  const inFlight = makeInFlight(() => {
    roomSignals++
  })
  const events: Array<string> = []
  const gates = new Map<number, Deferred.Deferred<void>>()
  const gate = (updateId: number) =>
    Effect.gen(function*() {
      const existing = gates.get(updateId)
      if (existing !== undefined) return existing
      const made = yield* Deferred.make<void>()
      gates.set(updateId, made)
      return made
    })
  const fibers = yield* FiberSet.make()
  let capDrained = 0
  const routing = yield* makeChatRouting({
    workers: WORKERS,
    inFlight,
    fibers,
    onCapDrained: () => {
      capDrained++
    },
    run: (item, worker: Semaphore.Semaphore) =>
      Semaphore.withPermit(
        worker,
        Effect.gen(function*() {
          inFlight.setState(item, "running")
          events.push(`start ${item.claimed.updateId}`)
          yield* Deferred.await(yield* gate(item.claimed.updateId))
          events.push(`end ${item.claimed.updateId}`)
        })
      )
  })
  const settle = Effect.gen(function*() {
    for (let i = 0; i < 20; i++) yield* Effect.yieldNow
  })
  return {
    inFlight,
    events: () => [...events],
    route: (item: Item) => routing.route(item).pipe(Effect.andThen(settle)),
    release: (updateId: number) =>
      Effect.flatMap(gate(updateId), (made) => Deferred.succeed(made, undefined)).pipe(Effect.andThen(settle)),
    roomSignals: () => roomSignals,
    capDrained: () => capDrained
  }
})

/** Two chat keys that `workerFor` puts on the same worker. */
const twoChatsOnOneWorker = (): [string, string] => {
  const first = "1"
  for (let id = 2;; id++) if (workerFor(String(id), WORKERS) === workerFor(first, WORKERS)) return [first, String(id)]
}

describe("ChatRouting", () => {
  it.effect("a chat's updates run one after another in the order routed; other chats do not wait for them", () =>
    Effect.gen(function*() {
      const routing = yield* recordingRouting
      const [chat, sameWorker] = twoChatsOnOneWorker()
      const other = ["2", "3", "4", "5"].find((key) => workerFor(key, WORKERS) !== workerFor(chat, WORKERS))!
      yield* routing.route(itemOf(1, chat))
      yield* routing.route(itemOf(2, chat))
      yield* routing.route(itemOf(3, other))
      yield* routing.route(itemOf(4, sameWorker))
      assert.deepStrictEqual(routing.events(), ["start 1", "start 3"], "2 waits for its chat, 4 for its worker")
      assert.strictEqual(routing.inFlight.size(), 4)
      assert.strictEqual(routing.inFlight.running(), 2)

      yield* routing.release(1)
      // The worker is free: the chat's next update and the other chat on that worker compete for it.
      const afterOne = routing.events().slice(3)
      assert.strictEqual(afterOne.length, 1)
      assert.include(["start 2", "start 4"], afterOne[0])
      for (const id of [2, 3, 4]) yield* routing.release(id)
      const events = routing.events()
      assert.isBelow(events.indexOf("end 1"), events.indexOf("start 2"))
      assert.strictEqual(routing.inFlight.size(), 0)
      assert.strictEqual(routing.inFlight.running(), 0)
    }))

  it.effect("room opening after claiming found none is signalled once", () =>
    Effect.gen(function*() {
      const routing = yield* recordingRouting
      yield* routing.route(itemOf(11, "11"))
      yield* routing.route(itemOf(12, "12"))
      routing.inFlight.markSaturated()
      yield* routing.release(11)
      yield* routing.release(12)
      assert.strictEqual(routing.roomSignals(), 1)
    }))

  it.effect("draining: awaitIdle waits for the running updates, and names the ones that started", () =>
    Effect.gen(function*() {
      const routing = yield* recordingRouting
      const item = itemOf(21, "21")
      item.started = true
      yield* routing.route(item)
      routing.inFlight.startDraining()
      const idle = yield* Effect.forkChild(routing.inFlight.awaitIdle("1 hour"))
      assert.deepStrictEqual(routing.inFlight.startedIds(), [21])
      yield* routing.release(21)
      assert.isTrue(yield* Fiber.join(idle))
      assert.deepStrictEqual(routing.inFlight.startedIds(), [])
    }))

  it.effect("a chat given CLAIMS_PER_CHAT updates wakes the claim loop when it runs out, even if they never queued at once", () =>
    Effect.gen(function*() {
      const routing = yield* recordingRouting
      for (let n = 0; n < CLAIMS_PER_CHAT - 1; n++) yield* routing.route(itemOf(900 + n, "90"))
      for (let n = 0; n < CLAIMS_PER_CHAT - 1; n++) yield* routing.release(900 + n)
      assert.strictEqual(routing.capDrained(), 0)
      for (let n = 0; n < CLAIMS_PER_CHAT; n++) yield* routing.route(itemOf(910 + n, "91"))
      for (let n = 0; n < CLAIMS_PER_CHAT - 1; n++) yield* routing.release(910 + n)
      assert.strictEqual(routing.capDrained(), 0, "not while its last update still runs")
      yield* routing.release(910 + CLAIMS_PER_CHAT - 1)
      assert.strictEqual(routing.capDrained(), 1)
      // Routed one by one while the earlier ones finish: the queue never holds them all.
      yield* routing.route(itemOf(920, "92"))
      for (let n = 1; n < CLAIMS_PER_CHAT; n++) {
        yield* routing.route(itemOf(920 + n, "92"))
        yield* routing.release(920 + n - 1)
      }
      assert.strictEqual(routing.capDrained(), 1)
      yield* routing.release(920 + CLAIMS_PER_CHAT - 1)
      assert.strictEqual(routing.capDrained(), 2)
    }))
})
