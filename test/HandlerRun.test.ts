/**
 * One update's handler runs (`dispatch/HandlerRun.ts`) driven alone: a claimed
 * row of the real inbox, a scripted handler, one worker permit, and the
 * `TestClock` for the retry backoff.
 */
import { assert, layer } from "@effect/vitest"
import { Duration, Effect, Exit, Fiber, Option, Schema, Semaphore } from "effect"
import { SqlClient } from "effect/sql/SqlClient"
import { TestClock } from "effect/testing"
import { makeFinishing } from "../src/dispatch/Finishing.ts"
import { makeHandlerRun } from "../src/dispatch/HandlerRun.ts"
import { UpdateHandlerError } from "../src/dispatch/UpdateHandler.ts"
import { SendWaits } from "../src/telegram/SendGate.ts"
import { Telegram } from "../src/telegram/Telegram.ts"
import { type InFlight, type Item, makeInFlight } from "../src/dispatch/InFlight.ts"
import { Inbox } from "../src/inbox/Inbox.ts"
import { Update } from "../src/telegram/TelegramUpdate.ts"
import { makeLogCapture } from "./support/LogCapture.ts"
import {
  clearInbox,
  fail,
  makeRecordingHandler,
  message,
  PipelineLive,
  rowOf,
  type Script,
  store
} from "./support/Pipeline.ts"

const TERM = "handler-run-test"
const MAX_ATTEMPTS = 3

/** Stores and claims one update for TERM, as an item held in `inFlight`. */
const claimOne = (updateId: number, inFlight: InFlight, earlierClaims = 0) =>
  Effect.gen(function*() {
    const sql = yield* SqlClient
    const inbox = yield* Inbox
    yield* clearInbox
    yield* store(message(updateId, 31))
    if (earlierClaims > 0) yield* sql`UPDATE telegram_updates SET attempts = ${earlierClaims}`
    const [claimed] = yield* inbox.claim(TERM, 1)
    const item: Item = {
      claimed: claimed!,
      update: Schema.decodeUnknownSync(Update)(claimed!.payload),
      chatKey: "31",
      worker: 0,
      state: "queued",
      started: false,
      claimedAtMillis: 0
    }
    inFlight.add(item)
    return item
  })

/** A runner on the test's inbox with `handler`; returns it with its `InFlight` and a worker permit. */
const runner = (handler: Parameters<typeof makeHandlerRun>[0]["handler"]) =>
  Effect.gen(function*() {
    const inFlight = makeInFlight(() => {})
    const inbox = yield* Inbox
    const run = makeHandlerRun({
      inbox,
      term: TERM,
      handler,
      finishing: yield* makeFinishing({ inbox, term: TERM, handler, telegram: yield* Telegram }),
      inFlight,
      handlerTimeout: Duration.seconds(10),
      maxAttempts: MAX_ATTEMPTS
    })
    return { inFlight, run, worker: yield* Semaphore.make(1) }
  })

/** Claims `updateId`, scripts its handler and starts its runs in a fiber, logging to a capture. */
const startRun = (updateId: number, script: Script) =>
  Effect.gen(function*() {
    const recorder = yield* makeRecordingHandler
    const logs = makeLogCapture()
    const { inFlight, run, worker } = yield* runner(recorder.handler)
    const item = yield* claimOne(updateId, inFlight)
    recorder.script(updateId, script)
    const fiber = yield* Effect.forkChild(run(item, worker).pipe(Effect.provide(logs.layer)))
    return { fiber, inFlight, item, logs, recorder }
  })

layer(PipelineLive(), { timeout: "60 seconds" })("HandlerRun", (it) => {
  it.effect("a failed run is recorded and retried after the backoff; the update ends done", () =>
    Effect.gen(function*() {
      const { fiber, inFlight, item, logs, recorder } = yield* startRun(
        501,
        (context) => (context.attempt === 1 ? fail("boom") : Effect.void)
      )
      yield* logs.awaitLine((l) => l.message === "[DISPATCH] update 501 failed (run 1 of 3): UpdateHandlerError: boom")
      yield* logs.awaitLine((l) => l.message.startsWith("[DISPATCH] update 501: run 2 in"))
      assert.strictEqual(item.state, "backoff")
      assert.strictEqual(inFlight.running(), 0, "a backoff holds no worker")
      assert.strictEqual((yield* rowOf(501))?.last_error, "UpdateHandlerError: boom")
      yield* TestClock.adjust("2 seconds")
      assert.deepStrictEqual(yield* Fiber.await(fiber), Exit.void)

      const row = yield* rowOf(501)
      assert.strictEqual(row?.status, "done")
      assert.strictEqual(row?.attempts, 2)
      assert.isTrue(item.started)
      assert.deepStrictEqual(
        recorder.history().filter((e) => e.phase === "start").map((e) => e.attempt),
        [1, 2]
      )
    }))

  it.effect("draining during a backoff starts no further run and leaves the row to the release", () =>
    Effect.gen(function*() {
      const { fiber, inFlight, logs, recorder } = yield* startRun(502, () => fail("always"))
      yield* logs.awaitLine((l) => l.message.startsWith("[DISPATCH] update 502: run 2 in"))
      inFlight.startDraining()
      yield* TestClock.adjust("2 seconds")
      const exit = yield* Fiber.await(fiber)
      assert.isTrue(Exit.hasInterrupts(exit), "interrupted, not finished")

      assert.lengthOf(recorder.history().filter((e) => e.phase === "start"), 1)
      const row = yield* rowOf(502)
      assert.strictEqual(row?.status, "processing")
      assert.strictEqual(row?.claimed_by, TERM)
      assert.strictEqual(row?.attempts, 1)
    }))

  it.effect("an update claimed again after UPDATE_MAX_ATTEMPTS unfinished claims is dead without a run", () =>
    Effect.gen(function*() {
      const recorder = yield* makeRecordingHandler
      const { inFlight, run, worker } = yield* runner(recorder.handler)
      const item = yield* claimOne(503, inFlight, MAX_ATTEMPTS)
      assert.strictEqual(item.claimed.attempts, MAX_ATTEMPTS + 1)

      yield* run(item, worker)
      assert.lengthOf(recorder.history(), 0, "no handler run")
      const row = yield* rowOf(503)
      assert.strictEqual(row?.status, "dead")
      assert.include(row?.last_error ?? "", `gave up after ${MAX_ATTEMPTS} claims that did not finish`)
    }))

  it.effect("a run that must wait for Telegram is rescheduled: no attempt counted, no failure recorded, no worker held", () =>
    Effect.gen(function*() {
      const waits = MAX_ATTEMPTS + 2
      let runs = 0
      const { fiber, inFlight, item, logs } = yield* startRun(504, () =>
        Effect.suspend(() =>
          ++runs <= waits
            ? Effect.fail(new UpdateHandlerError({ message: "sendMessage: 429", waitMillis: 20_000 }))
            : Effect.void
        ))
      let after = 0
      for (let n = 1; n <= waits; n++) {
        const line = yield* logs.awaitLine(
          (l) => l.message.includes("update 504 waits 20 s for Telegram's flood limit"),
          {
            after
          }
        )
        after = logs.lines().indexOf(line) + 1
        assert.strictEqual(item.state, "backoff")
        assert.strictEqual(inFlight.running(), 0, "a chat waiting on Telegram holds no worker")
        // Not before Telegram's wait is over.
        yield* TestClock.adjust("19 seconds")
        assert.strictEqual(runs, n)
        yield* TestClock.adjust("1 second")
      }
      assert.deepStrictEqual(yield* Fiber.await(fiber), Exit.void)
      const row = yield* rowOf(504)
      assert.strictEqual(row?.status, "done", `${waits} waits, more than the ${MAX_ATTEMPTS} runs an update gets`)
      assert.strictEqual(row?.attempts, 1)
      assert.isNull(row?.last_error)
      assert.isFalse(logs.lines().some((l) => l.message.includes("failed (run")))
    }))

  it.effect("a short wait for Telegram inside a run lets go of the worker meanwhile", () =>
    Effect.gen(function*() {
      const recorder = yield* makeRecordingHandler
      const { inFlight, run, worker } = yield* runner(recorder.handler)
      const item = yield* claimOne(505, inFlight)
      let waited = false
      recorder.script(505, () =>
        Effect.gen(function*() {
          const sendWaits = yield* SendWaits
          assert.isFalse(sendWaits.own, "a handler's sends are replies")
          yield* sendWaits.around(Effect.sleep("3 seconds"))
          waited = true
        }))
      const fiber = yield* Effect.forkChild(run(item, worker))
      yield* recorder.awaitEvents(1, (e) => e.updateId === 505 && e.phase === "start")
      yield* Effect.yieldNow
      // Another chat on the same worker gets it while this run waits.
      const other = yield* Semaphore.withPermit(worker, Effect.succeed("ran")).pipe(Effect.timeoutOption("1 second"))
      assert.deepStrictEqual(other, Option.some("ran"))
      yield* TestClock.adjust("3 seconds")
      assert.deepStrictEqual(yield* Fiber.await(fiber), Exit.void)
      assert.isTrue(waited)
      assert.strictEqual((yield* rowOf(505))?.status, "done")
      // The run gave the permit back exactly once.
      assert.strictEqual(yield* Semaphore.withPermit(worker, Effect.succeed(1)), 1)
      assert.isFalse(
        yield* Semaphore.withPermitsIfAvailable(worker, 2)(Effect.succeed(true)).pipe(
          Effect.map((taken) => taken._tag === "Some")
        )
      )
    }))
})
