/**
 * `POST /kie/callback` on a real HTTP server, the durable callback store on
 * real PostgreSQL, and the signals a subscriber (the engine) hears when a
 * callback is stored, also when the callback reaches another instance.
 */
import { assert, describe, layer } from "@effect/vitest"
import { Deferred, Duration, Effect, Exit, Fiber, Layer, Metric, Option, PubSub, Result, type Scope } from "effect"
import type { HttpServer } from "effect/http"
import { SqlClient } from "effect/sql/SqlClient"
import { TestClock } from "effect/testing"
import type { AppConfig } from "../src/platform/AppConfig.ts"
import { decodeRecordData, Kie, type KieShape, type TaskState } from "../src/kie/Kie.ts"
import {
  type CallbackSignal,
  KieCallbacks,
  type KieCallbacksShape,
  MAX_CALLBACK_BYTES
} from "../src/kie/KieCallback.ts"
import type { KieRateBudget } from "../src/kie/KieRateBudget.ts"
import { prune } from "../src/kie/sql/prune.ts"
import * as Metrics from "../src/observability/Metrics.ts"
import { type CallbackResult, FakeKie, type FakeKieOptions, type SendCallbackOptions } from "./fakes/FakeKie.ts"
import { CallbackServer, KieStack, KieTestDatabase, serverUrl } from "./support/KieTestStack.ts"
import { type LogCapture, makeLogCapture } from "./support/LogCapture.ts"
import { TEST_KIE_KEY, TEST_WEBHOOK_SECRET } from "./support/TestConfig.ts"

const HMAC_KEY = "kie-hmac-test-key-0123456789"
const webhookEnv = { PUBLIC_URL: "https://bot.example", TELEGRAM_WEBHOOK_SECRET: TEST_WEBHOOK_SECRET }
const REAL = "https://cdn.example/real.png"
const EVIL = "https://evil.example/spoof.png"

type Env = Kie | KieCallbacks | KieRateBudget | AppConfig | SqlClient | HttpServer.HttpServer | Scope.Scope

/** One bot instance: the client stack plus the callback route on its own port. */
const Instance = (fake: FakeKie, env: Record<string, string>) =>
  CallbackServer.pipe(Layer.provideMerge(KieStack(fake, { ...webhookEnv, ...env })))

interface Harness {
  readonly fake: FakeKie
  readonly kie: KieShape
  readonly callbacks: KieCallbacksShape
  /** Base URL of this instance's HTTP server. */
  readonly url: string
  /** Has the fake POST a task's callback to this instance (its callBackUrl's query kept). */
  readonly deliver: (
    taskId: string,
    options?: SendCallbackOptions & { readonly withoutRef?: boolean }
  ) => Effect.Effect<CallbackResult>
}

const deliverTo =
  (fake: FakeKie, base: string) =>
  (taskId: string, options: SendCallbackOptions & { readonly withoutRef?: boolean } = {}) =>
    Effect.promise(() => {
      const registered = fake.tasks.get(taskId)?.callBackUrl
      const search = registered === undefined || options.withoutRef === true ? "" : new URL(registered).search
      return fake.sendCallback(taskId, { url: `${base}/kie/callback${search}`, ...options })
    })

const withBot = <A, E>(
  options: {
    readonly fake?: Partial<FakeKieOptions>
    readonly env?: Record<string, string>
    /** Captures what the instance (its HTTP server included) logs. */
    readonly logs?: LogCapture
  },
  body: (h: Harness) => Effect.Effect<A, E, Env>
) =>
  Effect.scoped(Effect.gen(function*() {
    const fake = yield* FakeKie.scoped({ apiKey: TEST_KIE_KEY, ...options.fake })
    return yield* Effect.gen(function*() {
      const kie = yield* Kie
      const callbacks = yield* KieCallbacks
      const url = yield* serverUrl
      return yield* body({ fake, kie, callbacks, url, deliver: deliverTo(fake, url) })
    }).pipe(
      Effect.provide(Instance(fake, options.env ?? {})),
      // Outside, so the instance (its HTTP server included) is built with the capturing logger.
      Effect.provide(options.logs?.layer ?? Layer.empty)
    )
  }))

/** Lets real I/O (HTTP, PostgreSQL, NOTIFY) happen for `millis` of real time; the clock does not move. */
const realPause = (millis: number) => Effect.promise(() => new Promise((resolve) => setTimeout(resolve, millis)))

/**
 * Subscribes to `callbacks` now; every signal heard from then on is pushed
 * to the returned array by a fiber of the test's scope.
 */
const listenTo = (callbacks: KieCallbacksShape) =>
  Effect.gen(function*() {
    const subscription = yield* callbacks.subscribe
    const heard: Array<CallbackSignal> = []
    yield* PubSub.take(subscription).pipe(
      Effect.map((signal) => void heard.push(signal)),
      Effect.forever,
      Effect.forkScoped
    )
    return heard
  })

const arrived = (taskId: string) => (signal: CallbackSignal) => signal._tag === "Arrived" && signal.taskId === taskId

/** Waits (bounded real time, no clock movement) until a signal matching `match` has been heard. */
const heardSoon = (heard: ReadonlyArray<CallbackSignal>, match: (signal: CallbackSignal) => boolean) =>
  Effect.gen(function*() {
    for (let i = 0; i < 200 && !heard.some(match); i++) yield* realPause(10)
    assert.isTrue(heard.some(match), `heard without the clock moving: ${JSON.stringify(heard)}`)
  })

/** The callback stored for a task, and its data decoded as the engine decodes it. */
const storedFor = (callbacks: KieCallbacksShape, taskId: string) =>
  Effect.gen(function*() {
    const stored = yield* callbacks.lookup(taskId)
    if (Option.isNone(stored)) return assert.fail(`no callback stored for ${taskId}`)
    const decoded = decodeRecordData("recordInfo", taskId, stored.value.data)
    if (Result.isFailure(decoded)) return assert.fail(decoded.failure.message)
    return { trusted: stored.value.trusted, state: decoded.success as TaskState }
  })

/** The result URLs of a stored trusted success. */
const storedUrls = (callbacks: KieCallbacksShape, taskId: string) =>
  Effect.gen(function*() {
    const { state, trusted } = yield* storedFor(callbacks, taskId)
    assert.isTrue(trusted, "trusted")
    return state._tag === "Success" ? state.resultUrls : assert.fail(`expected success, got ${state._tag}`)
  })

const post = (url: string, init: RequestInit) =>
  Effect.promise(() => fetch(url, init).then(async (r) => ({ status: r.status, body: await r.text() })))

const countRows = (taskId: string) =>
  Effect.gen(function*() {
    const sql = yield* SqlClient
    const rows = yield* sql<{ n: number; count: number | null }>`
      SELECT count(*)::int AS n, max(callback_count) AS count FROM kie_tasks WHERE task_id = ${taskId}
    `
    return rows[0]!
  })

/** How many callback requests the route has answered with `result` (this process, all tests). */
const answeredAs = (result: Metrics.KieCallbackResult) =>
  Effect.map(Metric.value(Metric.withAttributes(Metrics.kieCallbacks, { result })), (state) => state.count)

/**
 * Posts a body the route must refuse as too large, and checks that it did (its counter moved by one).
 * The route answers 413 as soon as the body passes the limit and reads no more of it, so a client
 * still uploading may see the connection close before it reads that answer (a server may close after
 * an early error response): then the status is "closed after answering".
 */
const refused = (url: string, init: RequestInit) =>
  Effect.gen(function*() {
    const before = yield* answeredAs("too_large")
    const status = yield* Effect.tryPromise(() => fetch(url, init).then((r) => r.status)).pipe(
      Effect.orElseSucceed(() => "closed after answering" as const)
    )
    assert.strictEqual((yield* answeredAs("too_large")) - before, 1, "answered as too large")
    return status
  })

/** `effect`, or a test failure after `millis` of real time (the TestClock does not move here). */
const withinRealTime = <A, E, R>(millis: number, what: string, effect: Effect.Effect<A, E, R>) =>
  Effect.raceFirst(
    effect,
    Effect.promise(() => new Promise((resolve) => setTimeout(resolve, millis))).pipe(
      Effect.andThen(Effect.die(new Error(`${what}: no answer within ${millis} ms`)))
    )
  )

/**
 * Runs `effect` while another transaction holds `kie_tasks` in EXCLUSIVE
 * mode: plain reads go through, anything that locks rows (SELECT … FOR
 * UPDATE) or writes waits until the lock is released after `effect`.
 */
const whileTableLocked = <A, E, R>(effect: Effect.Effect<A, E, R>) =>
  Effect.gen(function*() {
    const sql = yield* SqlClient
    const locked = yield* Deferred.make<void>()
    const unlock = yield* Deferred.make<void>()
    const holder = yield* sql.withTransaction(Effect.gen(function*() {
      yield* sql`LOCK TABLE kie_tasks IN EXCLUSIVE MODE`
      yield* Deferred.succeed(locked, undefined)
      yield* Deferred.await(unlock)
    })).pipe(Effect.forkChild)
    yield* Deferred.await(locked)
    return yield* effect.pipe(
      Effect.ensuring(Deferred.succeed(unlock, undefined).pipe(Effect.andThen(Fiber.join(holder)), Effect.orDie))
    )
  })

layer(KieTestDatabase, { timeout: "120 seconds" })("Kie callbacks", (it) => {
  describe("subscribe: a stored callback tells subscribers", () => {
    it.effect("stored before anyone subscribes: found in the store (subscribe, then read)", () =>
      withBot({}, ({ fake, kie, deliver, callbacks }) =>
        Effect.gen(function*() {
          fake.scriptNextTasks({ steps: ["generating"], final: { success: [REAL] } })
          const taskId = yield* kie.createTask({ prompt: "p", aspectRatio: "1:1" })
          const answer = yield* deliver(taskId)
          assert.deepStrictEqual(answer, { status: 200, body: JSON.stringify({ ok: true }) })
          yield* listenTo(callbacks)
          const found = yield* callbacks.lookupMany([taskId])
          assert.isTrue(found.get(taskId)?.trusted)
          assert.deepStrictEqual(yield* storedUrls(callbacks, taskId), [REAL])
          assert.strictEqual(fake.counters.recordInfo, 0, "polling still says generating; nobody needed it")
        })))

    it.effect("arriving while subscribed: heard at once, without waiting for a poll", () =>
      withBot({}, ({ fake, kie, deliver, callbacks }) =>
        Effect.gen(function*() {
          fake.scriptNextTasks({ steps: ["generating"], final: { success: [REAL] } })
          const taskId = yield* kie.createTask({ prompt: "p", aspectRatio: "1:1" })
          const heard = yield* listenTo(callbacks)
          assert.strictEqual((yield* deliver(taskId)).status, 200)
          yield* heardSoon(heard, arrived(taskId))
          assert.deepStrictEqual(yield* storedUrls(callbacks, taskId), [REAL])
          assert.strictEqual(fake.counters.recordInfo, 0)
        })))

    it.effect("arriving at another instance (PASSIVE, same database): the subscriber on this one hears it through NOTIFY", () =>
      withBot({}, ({ fake, kie, url, callbacks }) =>
        Effect.gen(function*() {
          // `fresh`: its own store, listener and server, not the memoized ones of this instance.
          const other = yield* Layer.build(Layer.fresh(Instance(fake, {})))
          const otherUrl = yield* serverUrl.pipe(Effect.provideContext(other))
          assert.notStrictEqual(otherUrl, url)
          fake.scriptNextTasks({ steps: ["generating"], final: { success: [REAL] } })
          const taskId = yield* kie.createTask({ prompt: "p", aspectRatio: "1:1" })
          const heard = yield* listenTo(callbacks)
          assert.strictEqual((yield* deliverTo(fake, otherUrl)(taskId)).status, 200)
          yield* heardSoon(heard, arrived(taskId))
          assert.deepStrictEqual(yield* storedUrls(callbacks, taskId), [REAL])
          assert.strictEqual(fake.counters.recordInfo, 0)
        })))

    it.effect("a NOTIFY lost while the listener was down: the reconnect tells subscribers to re-check, and NOTIFY works again", () =>
      withBot({}, ({ fake, kie, url, callbacks }) =>
        Effect.gen(function*() {
          const other = yield* Layer.build(Layer.fresh(Instance(fake, {})))
          const otherUrl = yield* serverUrl.pipe(Effect.provideContext(other))
          assert.notStrictEqual(otherUrl, url)
          fake.scriptNextTasks(
            { steps: ["generating"], final: { success: [REAL] } },
            { steps: ["generating"], final: { success: [REAL] } }
          )
          const taskId = yield* kie.createTask({ prompt: "p", aspectRatio: "1:1" })
          const later = yield* kie.createTask({ prompt: "q", aspectRatio: "1:1" })
          const heard = yield* listenTo(callbacks)

          const sql = yield* SqlClient
          const killed = yield* sql<{ pid: number }>`
            SELECT pid FROM pg_stat_activity
            WHERE datname = current_database() AND pid <> pg_backend_pid() AND query ILIKE 'LISTEN%'
          `
          assert.isAtLeast(killed.length, 2, "both instances listen")
          yield* sql`SELECT pg_terminate_backend(pid) FROM pg_stat_activity
            WHERE datname = current_database() AND pid <> pg_backend_pid() AND query ILIKE 'LISTEN%'`
          assert.strictEqual((yield* deliverTo(fake, otherUrl)(taskId)).status, 200)
          yield* realPause(100)
          assert.isFalse(heard.some(arrived(taskId)), "nobody heard the NOTIFY")
          const resyncsBefore = heard.filter((signal) => signal._tag === "Resync").length

          // The listener retries after ~0.5 s (TestClock).
          yield* TestClock.adjust("1 second")
          yield* heardSoon(
            heard,
            (signal) => signal._tag === "Resync" && heard.filter((s) => s._tag === "Resync").length > resyncsBefore
          )
          assert.deepStrictEqual(yield* storedUrls(callbacks, taskId), [REAL], "the re-check finds it in the store")

          assert.strictEqual((yield* deliverTo(fake, otherUrl)(later)).status, 200)
          yield* heardSoon(heard, arrived(later))
          assert.strictEqual(fake.counters.recordInfo, 0, "found in the store, not by polling")
        })))

    it.effect("after polling already found the result: the late callback is accepted and stored", () =>
      withBot({}, ({ fake, kie, deliver, callbacks }) =>
        Effect.gen(function*() {
          fake.scriptNextTasks({ steps: [{ success: [REAL] }] })
          const taskId = yield* kie.createTask({ prompt: "p", aspectRatio: "1:1" })
          const polled = yield* kie.getTaskOnce(taskId)
          assert.deepStrictEqual(polled._tag === "Success" && polled.resultUrls, [REAL])
          assert.strictEqual((yield* deliver(taskId)).status, 200)
          assert.deepStrictEqual(yield* storedUrls(callbacks, taskId), [REAL])
        })))

    it.effect("a fail callback is stored and heard: Kie's code and message, as recordInfo would say", () =>
      withBot({}, ({ fake, kie, deliver, callbacks }) =>
        Effect.gen(function*() {
          fake.scriptNextTasks({ steps: ["generating"], final: { fail: { code: "400", msg: "Content flagged" } } })
          const taskId = yield* kie.createTask({ prompt: "p", aspectRatio: "1:1" })
          const heard = yield* listenTo(callbacks)
          yield* deliver(taskId)
          yield* heardSoon(heard, arrived(taskId))
          const { state, trusted } = yield* storedFor(callbacks, taskId)
          assert.isTrue(trusted)
          assert.include(state, { _tag: "Fail", failCode: "400", failMsg: "Content flagged" })
        })))
  })

  describe("trust", () => {
    it.effect("without the task's ref (and no HMAC key) a callback is only a hint: heard, stored untrusted; the genuine one wins", () =>
      withBot({}, ({ fake, kie, deliver, callbacks }) =>
        Effect.gen(function*() {
          fake.scriptNextTasks({ steps: ["generating"], final: { success: [REAL] } })
          const taskId = yield* kie.createTask({ prompt: "p", aspectRatio: "1:1" })
          const heard = yield* listenTo(callbacks)
          const answer = yield* deliver(taskId, { withoutRef: true, state: { success: [EVIL] } })
          assert.strictEqual(answer.status, 200)
          yield* heardSoon(heard, arrived(taskId))
          const hint = yield* storedFor(callbacks, taskId)
          assert.isFalse(hint.trusted, "the spoofed success is not to be believed")
          assert.strictEqual(fake.counters.recordInfo, 0, "the store does not ask recordInfo; its reader does")

          assert.strictEqual((yield* deliver(taskId)).status, 200)
          assert.deepStrictEqual(yield* storedUrls(callbacks, taskId), [REAL], "the genuine callback replaces the hint")
        })))

    it.effect("with KIE_WEBHOOK_HMAC_KEY: a good signature is stored; bad, missing, stale or future ones are 401", () =>
      Effect.gen(function*() {
        // Far enough from 0 that a timestamp 6 minutes back is still valid.
        // (Not a huge jump: every scheduled sleep up to the new time runs.)
        yield* TestClock.adjust("20 minutes")
        const clock = yield* TestClock.testClockWith(Effect.succeed)
        yield* withBot(
          {
            fake: { webhookHmacKey: HMAC_KEY, now: () => clock.currentTimeMillisUnsafe() },
            env: { KIE_WEBHOOK_HMAC_KEY: HMAC_KEY }
          },
          ({ fake, kie, deliver, callbacks }) =>
            Effect.gen(function*() {
              fake.scriptNextTasks({ steps: ["generating"], final: { success: [REAL] } })
              const taskId = yield* kie.createTask({ prompt: "p", aspectRatio: "1:1" })
              const nowSeconds = Math.floor(clock.currentTimeMillisUnsafe() / 1000)
              const rejected = [
                { signature: "bm90IHRoZSBzaWduYXR1cmU=" },
                { hmacKey: "some-other-key-0123456789" },
                { unsigned: true },
                { timestamp: nowSeconds - 6 * 60 },
                { timestamp: nowSeconds + 6 * 60 }
              ]
              for (const options of rejected) {
                const answer = yield* deliver(taskId, options)
                assert.strictEqual(answer.status, 401, JSON.stringify(options))
              }
              // Even with the right ref in the URL: the key is what counts.
              assert.isTrue(Option.isNone(yield* callbacks.lookup(taskId)))
              const good = yield* deliver(taskId, { timestamp: nowSeconds - 4 * 60 })
              assert.strictEqual(good.status, 200)
              const stored = yield* callbacks.lookup(taskId)
              assert.isTrue(Option.isSome(stored) && stored.value.trusted)
              assert.deepStrictEqual(yield* storedUrls(callbacks, taskId), [REAL])
            })
        )
      }))
  })

  describe("the route", () => {
    it.effect("idempotent: the same task twice is stored once, the first callback is kept", () =>
      withBot({}, ({ fake, kie, deliver, callbacks }) =>
        Effect.gen(function*() {
          fake.scriptNextTasks({ steps: ["generating"], final: { success: [REAL] } })
          const taskId = yield* kie.createTask({ prompt: "p", aspectRatio: "1:1" })
          const [storedBefore, duplicatesBefore] = [yield* answeredAs("stored"), yield* answeredAs("duplicate")]
          assert.strictEqual((yield* deliver(taskId)).status, 200)
          assert.strictEqual((yield* deliver(taskId)).status, 200)
          assert.strictEqual((yield* deliver(taskId, { state: { success: [EVIL] } })).status, 200)
          assert.deepStrictEqual(yield* countRows(taskId), { n: 1, count: 3 })
          assert.strictEqual((yield* answeredAs("stored")) - storedBefore, 1)
          assert.strictEqual((yield* answeredAs("duplicate")) - duplicatesBefore, 2)
          const stored = yield* callbacks.lookup(taskId)
          assert.isTrue(Option.isSome(stored))
          assert.include(JSON.stringify(Option.getOrThrow(stored).data), REAL)
          assert.notInclude(JSON.stringify(Option.getOrThrow(stored).data), EVIL)
        })))

    it.effect("a callback for an unknown task is 200 and ignored", () =>
      withBot({}, ({ fake, deliver }) =>
        Effect.gen(function*() {
          fake.addTask("task_not_ours")
          const answer = yield* deliver("task_not_ours")
          assert.strictEqual(answer.status, 200)
          assert.include(answer.body, "unknown task")
          assert.deepStrictEqual(yield* countRows("task_not_ours"), { n: 0, count: null })
        })))

    it.effect("an unknown task is refused cheaply: one plain read (no row lock, no transaction), no log line, counted", () =>
      Effect.gen(function*() {
        const logs = makeLogCapture()
        yield* withBot({ logs }, ({ fake, kie, deliver }) =>
          Effect.gen(function*() {
            fake.scriptNextTasks({ steps: ["generating"], final: { success: [REAL] } })
            const ours = yield* kie.createTask({ prompt: "p", aspectRatio: "1:1" })
            fake.addTask("task_not_ours_either")
            const before = yield* answeredAs("unknown_task")
            const since = logs.mark()
            // Storing takes a row lock, which the EXCLUSIVE table lock holds up: only a plain read answers now.
            const url = yield* serverUrl
            const withUnknownRef = {
              method: "POST",
              headers: { "content-type": "application/json" },
              body: JSON.stringify({
                code: 200,
                data: { taskId: "task_not_ours_3", state: "fail", failCode: "500", failMsg: "Internal Error" }
              })
            }
            const answers = yield* whileTableLocked(Effect.all([
              withinRealTime(5_000, "an unknown task", deliver("task_not_ours_either")),
              withinRealTime(5_000, "an unknown ref", post(`${url}/kie/callback?ref=0123456789abcdef`, withUnknownRef))
            ]))
            for (const answer of answers) {
              assert.strictEqual(answer.status, 200)
              assert.include(answer.body, "unknown task")
            }
            assert.strictEqual((yield* answeredAs("unknown_task")) - before, 2)
            const lines = logs.lines().slice(since)
            assert.deepStrictEqual(lines.filter((l) => l.level !== "DEBUG").map((l) => l.message), [])

            // A task of ours still goes through the storing transaction (after the lock is gone).
            assert.strictEqual((yield* deliver(ours)).status, 200)
            assert.deepStrictEqual(yield* storedUrls(yield* KieCallbacks, ours), [REAL])
            // (And the capture does see the route's lines.)
            yield* logs.awaitLine((l) => l.level === "INFO" && l.message.startsWith("[KIE] callback stored"), {
              after: since
            })
          }))
      }))

    it.effect("in long-polling mode (no PUBLIC_URL) the route is not served: 404", () =>
      Effect.scoped(Effect.gen(function*() {
        const fake = yield* FakeKie.scoped({ apiKey: TEST_KIE_KEY })
        yield* Effect.gen(function*() {
          const url = yield* serverUrl
          const posted = yield* post(`${url}/kie/callback`, {
            method: "POST",
            headers: { "content-type": "application/json" },
            body: JSON.stringify({ code: 200, data: { taskId: "task_polling", state: "success" } })
          })
          assert.strictEqual(posted.status, 404)
        }).pipe(Effect.provide(CallbackServer.pipe(Layer.provideMerge(KieStack(fake, {})))))
      })))

    it.effect("413 for a body over 64 KiB (declared or chunked), 400 for non-JSON or a non-callback", () =>
      withBot({}, ({ url }) =>
        Effect.gen(function*() {
          const target = `${url}/kie/callback`
          const json = { "content-type": "application/json" }
          assert.strictEqual(MAX_CALLBACK_BYTES, 64 * 1024)
          const padded = (size: number) => {
            const body = (pad: string) => JSON.stringify({ code: 200, data: { taskId: "t", state: "generating", pad } })
            return body("x".repeat(size - body("").length))
          }
          const exact = yield* post(target, { method: "POST", headers: json, body: padded(MAX_CALLBACK_BYTES) })
          assert.deepStrictEqual(exact, {
            status: 200,
            body: JSON.stringify({ ok: true, ignored: "not a final state" })
          })
          const over = padded(MAX_CALLBACK_BYTES + 1)
          assert.strictEqual(yield* refused(target, { method: "POST", headers: json, body: over }), 413)
          const chunked = new ReadableStream({
            start(controller) {
              for (let i = 0; i < 17; i++) controller.enqueue(new Uint8Array(64 * 1024).fill(32))
              controller.close()
            }
          })
          const streamed = yield* refused(
            target,
            { method: "POST", headers: json, body: chunked, duplex: "half" } as RequestInit
          )
          assert.include([413, "closed after answering"], streamed)
          assert.strictEqual((yield* post(target, { method: "POST", headers: json, body: "{not json" })).status, 400)
          assert.strictEqual(
            (yield* post(target, { method: "POST", headers: json, body: JSON.stringify({ hello: 1 }) })).status,
            400
          )
          const noUrls = { code: 200, data: { taskId: "t", state: "success", resultJson: "{\"resultUrls\":[]}" } }
          assert.strictEqual(
            (yield* post(target, { method: "POST", headers: json, body: JSON.stringify(noUrls) })).status,
            400
          )
        })))

    it.effect("`task_id` instead of `taskId` is accepted", () =>
      withBot({}, ({ fake, kie, callbacks, url }) =>
        Effect.gen(function*() {
          fake.scriptNextTasks({ steps: ["generating"] })
          const taskId = yield* kie.createTask({ prompt: "p", aspectRatio: "1:1" })
          const ref = new URL(fake.tasks.get(taskId)!.callBackUrl!).search
          const body = {
            code: 200,
            msg: "success",
            data: { task_id: taskId, state: "success", resultJson: JSON.stringify({ resultUrls: [REAL] }) }
          }
          const answer = yield* post(`${url}/kie/callback${ref}`, {
            method: "POST",
            headers: { "content-type": "application/json" },
            body: JSON.stringify(body)
          })
          assert.strictEqual(answer.status, 200)
          assert.isTrue(Option.isSome(yield* callbacks.lookup(taskId)))
        })))
  })

  it.effect("the store: lookupMany for a batch poller, prune drops old registry rows only", () =>
    withBot({}, ({ fake, kie, deliver, callbacks }) =>
      Effect.gen(function*() {
        fake.scriptNextTasks({ steps: ["generating"] }, { steps: ["generating"] })
        const a = yield* kie.createTask({ prompt: "a", aspectRatio: "1:1" })
        const b = yield* kie.createTask({ prompt: "b", aspectRatio: "1:1" })
        yield* deliver(a)
        const found = yield* callbacks.lookupMany([a, b, "task_unknown"])
        assert.deepStrictEqual([...found.keys()], [a])
        assert.strictEqual(found.get(a)!.state, "success")

        const sql = yield* SqlClient
        yield* sql`UPDATE kie_tasks SET created_at = now() - interval '8 days' WHERE task_id = ${a}`
        assert.strictEqual(yield* prune(sql, Duration.days(7)), 1)
        assert.deepStrictEqual(yield* countRows(a), { n: 0, count: null })
        assert.strictEqual((yield* countRows(b)).n, 1)
      })))

  it.effect("createTask timed out after sending: the callback carries the attempt's ref and recovers the task id", () =>
    withBot({}, ({ fake, kie, deliver, callbacks }) =>
      Effect.gen(function*() {
        fake.scriptCreate({ hang: true }).scriptNextTasks({ steps: ["generating"], final: { success: [REAL] } })
        const fiber = yield* Effect.forkChild(kie.createTask({ prompt: "p", aspectRatio: "1:1" }))
        yield* fake.awaitCalls("createTask", 1)
        yield* Effect.promise(() => fake.idle())
        yield* TestClock.adjust("30 seconds")
        const exit = yield* Fiber.await(fiber)
        assert.isTrue(Exit.isFailure(exit))
        const error = yield* Fiber.join(fiber).pipe(Effect.flip)
        if (error._tag !== "KieCreateTaskUncertain") return assert.fail(error._tag)
        assert.isTrue(error.recoverable)
        assert.isTrue(Option.isNone(yield* kie.recoverTask(error.ref)))

        const [created] = [...fake.tasks.values()]
        assert.strictEqual((yield* deliver(created!.taskId)).status, 200)
        const recovered = yield* kie.recoverTask(error.ref)
        assert.deepStrictEqual(recovered, Option.some(created!.taskId))
        assert.deepStrictEqual(yield* storedUrls(callbacks, created!.taskId), [REAL])
        assert.strictEqual(fake.counters.createTask, 1)
      })))
})
