/**
 * The Kie client against the fake Kie server on loopback, with TestClock for
 * every wait (retries, the budget).
 */
import { assert, describe, it, layer } from "@effect/vitest"
import { Effect, Exit, Fiber, Logger } from "effect"
import type { SqlClient } from "effect/sql/SqlClient"
import { TestClock } from "effect/testing"
import * as net from "node:net"
import type { AppConfig } from "../src/platform/AppConfig.ts"
import { Kie, type KieError, type KieShape, KieTaskFailed } from "../src/kie/Kie.ts"
import type { KieCallbacks } from "../src/kie/KieCallback.ts"
import { KieRateBudget } from "../src/kie/KieRateBudget.ts"
import { makeLogger } from "../src/platform/Logging.ts"
import { FakeKie, type FakeKieOptions } from "./fakes/FakeKie.ts"
import { advanceUntil, KieStack, KieTestDatabase, tick } from "./support/KieTestStack.ts"
import { TEST_KIE_KEY, TEST_WEBHOOK_SECRET } from "./support/TestConfig.ts"

type Env = Kie | KieCallbacks | KieRateBudget | AppConfig | SqlClient

interface Harness {
  readonly fake: FakeKie
  readonly kie: KieShape
  /** Every log line written so far, unredacted. */
  readonly logs: Array<string>
}

/**
 * Runs `body` against a fresh fake and a fresh client stack. Logs are
 * captured without redaction and checked for the API key at the end.
 */
const withKie = <A, E>(
  options: { readonly fake?: Partial<FakeKieOptions>; readonly env?: Record<string, string> },
  body: (h: Harness) => Effect.Effect<A, E, Env>
) =>
  Effect.scoped(Effect.gen(function*() {
    const fake = yield* FakeKie.scoped({ apiKey: TEST_KIE_KEY, ...options.fake })
    const logs: Array<string> = []
    const result = yield* Effect.gen(function*() {
      const kie = yield* Kie
      return yield* body({ fake, kie, logs })
    }).pipe(
      Effect.provide(KieStack(fake, options.env)),
      Effect.provide(Logger.layer([makeLogger({ format: "json", secrets: [], write: (line) => logs.push(line) })]))
    )
    assert.notInclude(logs.join("\n"), TEST_KIE_KEY, "the API key must never be logged")
    return result
  }))

const isDone = (fiber: Fiber.Fiber<unknown, unknown>) => Effect.sync(() => fiber.pollUnsafe() !== undefined)

const assertNoKey = (error: unknown) => {
  assert.notInclude(String(error), TEST_KIE_KEY)
  assert.notInclude(JSON.stringify(error), TEST_KIE_KEY)
  assert.notInclude((error as Error).message, TEST_KIE_KEY)
}

/** Forks `effect`, drives the clock until it ends, returns its failure (or fails the test). */
const failureOf = <A, E>(fake: FakeKie, effect: Effect.Effect<A, E, Env>, step = "1 second" as const) =>
  Effect.gen(function*() {
    const fiber = yield* Effect.forkChild(effect)
    yield* advanceUntil(fake, isDone(fiber), step)
    const exit = yield* Fiber.await(fiber)
    if (Exit.isSuccess(exit)) return assert.fail(`expected a failure, got ${JSON.stringify(exit.value)}`)
    const error = exit.cause.reasons.find((r) => r._tag === "Fail")
    if (error === undefined || error._tag !== "Fail")
      return assert.fail(`expected a typed failure, got ${String(exit.cause)}`)
    assertNoKey(error.error)
    return error.error as E
  })

const successOf = <A, E>(fake: FakeKie, effect: Effect.Effect<A, E, Env>, step = "1 second" as const) =>
  Effect.gen(function*() {
    const fiber = yield* Effect.forkChild(effect)
    yield* advanceUntil(fake, isDone(fiber), step)
    return yield* Fiber.join(fiber)
  })

const webhookEnv = { PUBLIC_URL: "https://bot.example", TELEGRAM_WEBHOOK_SECRET: TEST_WEBHOOK_SECRET }

const documentedCodes: ReadonlyArray<readonly [number, KieError["_tag"], boolean]> = [
  [401, "KieUnauthorized", false],
  [402, "KieInsufficientCredits", false],
  [404, "KieNotFound", false],
  [422, "KieValidationFailed", false],
  [429, "KieRateLimited", true],
  [433, "KieUsageLimitExceeded", false],
  [455, "KieMaintenance", true],
  [500, "KieServerError", true],
  [501, "KieGenerationFailed", false],
  [505, "KieFeatureDisabled", false]
]

layer(KieTestDatabase, { timeout: "120 seconds" })("Kie", (it) => {
  describe("createTask", () => {
    it.effect("sends model z-image with prompt, aspect_ratio and nsfw_checker, Bearer auth and a User-Agent", () =>
      withKie({ env: webhookEnv }, ({ fake, kie }) =>
        Effect.gen(function*() {
          const taskId = yield* kie.createTask({ prompt: "a red fox in the snow", aspectRatio: "16:9" })
          const task = fake.tasks.get(taskId)
          assert.isDefined(task)
          assert.strictEqual(task!.body.model, "z-image")
          assert.deepStrictEqual(task!.body.input, {
            prompt: "a red fox in the snow",
            aspect_ratio: "16:9",
            nsfw_checker: true
          })
          assert.match(task!.callBackUrl!, /^https:\/\/bot\.example\/kie\/callback\?ref=[0-9a-f]{32}$/)
          const request = fake.requests[0]!
          assert.isTrue(request.authorized)
          assert.match(request.userAgent!, /^Mozilla\/5\.0 \(compatible; zimage-bot\/\d/)
          assert.match(request.contentType!, /^application\/json/)
        })))

    it.effect("in polling mode sends no callBackUrl; KIE_NSFW_CHECKER=false is sent as false", () =>
      withKie({ env: { KIE_NSFW_CHECKER: "false" } }, ({ fake, kie }) =>
        Effect.gen(function*() {
          const taskId = yield* kie.createTask({ prompt: "🦊".repeat(1000), aspectRatio: "1:1" })
          const task = fake.tasks.get(taskId)!
          assert.notProperty(task.body, "callBackUrl")
          assert.strictEqual(task.body.input.nsfw_checker, false)
        })))

    it.effect("a prompt Kie would reject is not sent", () =>
      withKie({}, ({ fake, kie }) =>
        Effect.gen(function*() {
          const tooLong = yield* kie.createTask({ prompt: "a".repeat(1001), aspectRatio: "1:1" }).pipe(Effect.flip)
          assert.strictEqual(tooLong._tag, "KieValidationFailed")
          const empty = yield* kie.createTask({ prompt: "   ", aspectRatio: "1:1" }).pipe(Effect.flip)
          assert.strictEqual(empty._tag, "KieValidationFailed")
          const ratio = yield* kie.createTask({ prompt: "x", aspectRatio: "2:1" as never }).pipe(Effect.flip)
          assert.strictEqual(ratio._tag, "KieValidationFailed")
          assert.strictEqual(fake.counters.createTask, 0)
        })))

    it.effect("every documented code, in the body with HTTP 200 and as the HTTP status: its error, retried only when it proves nothing was created", () =>
      withKie({}, ({ fake, kie }) =>
        Effect.gen(function*() {
          for (const [code, tag, retryable] of documentedCodes) {
            for (const httpStatus of [200, code]) {
              const before = fake.counters.createTask
              const attempts = retryable ? 4 : 1
              fake.scriptCreate(
                ...Array.from({ length: attempts }, () => ({ error: code, httpStatus, msg: `scripted ${code}` }))
              )
              const error = yield* failureOf(fake, kie.createTask({ prompt: "p", aspectRatio: "1:1" }))
              assert.strictEqual(error._tag, tag, `code ${code} (HTTP ${httpStatus})`)
              assert.strictEqual(error.retryable, retryable, `retryable of ${code}`)
              assert.strictEqual(
                fake.counters.createTask - before,
                attempts,
                `attempts for ${code} (HTTP ${httpStatus})`
              )
              assert.include(error.message, String(code))
              assert.isAbove(error.userReason.ru.length, 10)
              assert.isAbove(error.userReason.en.length, 10)
            }
          }
          assert.strictEqual(fake.counters.tasksCreated, 0)
        })))

    it.effect("Kie echoing the key in its msg: scrubbed from errors and logs", () =>
      withKie({}, ({ fake, kie }) =>
        Effect.gen(function*() {
          fake.scriptCreate({ error: 401, msg: `invalid key ${TEST_KIE_KEY}` })
          const created = yield* failureOf(fake, kie.createTask({ prompt: "p", aspectRatio: "1:1" }))
          assert.strictEqual(created._tag, "KieUnauthorized")
          assert.include(created.message, "invalid key <redacted>")
          fake.addTask("task_k")
          fake.scriptRecordInfo({ error: 500, msg: `oops ${TEST_KIE_KEY}` })
          const polled = yield* failureOf(fake, kie.getTaskOnce("task_k"))
          assert.strictEqual(polled._tag, "KieServerError")
          assert.include(polled.message, "oops <redacted>")
        })))

    it.effect("429 then success: waits a full window (the budget pauses), then one task", () =>
      withKie({}, ({ fake, kie }) =>
        Effect.gen(function*() {
          fake.scriptCreate({ error: 429, msg: "Rate limit exceeded" })
          const fiber = yield* Effect.forkChild(kie.createTask({ prompt: "p", aspectRatio: "1:1" }))
          yield* fake.awaitCalls("createTask", 1)
          for (let i = 0; i < 9; i++) yield* tick(fake, "1 second")
          assert.strictEqual(fake.counters.createTask, 1, "no retry within Kie's window after a 429")
          yield* advanceUntil(fake, isDone(fiber), "1 second")
          const taskId = yield* Fiber.join(fiber)
          assert.strictEqual(fake.counters.createTask, 2)
          assert.strictEqual(fake.counters.tasksCreated, 1)
          assert.isTrue(fake.tasks.has(taskId))
        })))

    it.effect("500 then success: retried, one task", () =>
      withKie({}, ({ fake, kie }) =>
        Effect.gen(function*() {
          fake.scriptCreate({ error: 500, msg: "Internal Error" })
          const taskId = yield* successOf(fake, kie.createTask({ prompt: "p", aspectRatio: "1:1" }))
          assert.strictEqual(fake.counters.createTask, 2)
          assert.strictEqual(fake.counters.tasksCreated, 1)
          assert.isTrue(fake.tasks.has(taskId))
        })))

    it.effect("timeout after sending: KieCreateTaskUncertain, and the fake saw exactly one createTask", () =>
      withKie({ env: webhookEnv }, ({ fake, kie, logs }) =>
        Effect.gen(function*() {
          fake.scriptCreate({ hang: true })
          const fiber = yield* Effect.forkChild(kie.createTask({ prompt: "p", aspectRatio: "1:1" }))
          yield* fake.awaitCalls("createTask", 1)
          yield* tick(fake, "29 seconds")
          assert.isFalse(yield* isDone(fiber))
          yield* advanceUntil(fake, isDone(fiber), "1 second")
          const error = yield* Fiber.join(fiber).pipe(Effect.flip)
          assert.strictEqual(error._tag, "KieCreateTaskUncertain")
          if (error._tag !== "KieCreateTaskUncertain") return
          assert.strictEqual(error.reason, "timeout")
          assert.isFalse(error.retryable)
          assert.isTrue(error.recoverable)
          assert.match(error.ref, /^[0-9a-f]{32}$/)
          assertNoKey(error)
          for (let i = 0; i < 60; i++) yield* tick(fake, "1 second")
          assert.strictEqual(fake.counters.createTask, 1)
          assert.strictEqual(fake.counters.tasksCreated, 1, "the task exists and is billed: never a second one")
          assert.isTrue(logs.some((l) => l.includes("may have created a task")))
        })))

    it.effect("connection reset after sending: KieCreateTaskUncertain, one createTask", () =>
      withKie({}, ({ fake, kie }) =>
        Effect.gen(function*() {
          fake.scriptCreate({ reset: true })
          const error = yield* failureOf(fake, kie.createTask({ prompt: "p", aspectRatio: "1:1" }))
          assert.strictEqual(error._tag, "KieCreateTaskUncertain")
          if (error._tag === "KieCreateTaskUncertain") {
            assert.strictEqual(error.reason, "connection-lost")
            assert.isFalse(error.recoverable, "no callback in polling mode")
          }
          for (let i = 0; i < 10; i++) yield* tick(fake, "1 second")
          assert.strictEqual(fake.counters.createTask, 1)
        })))

    it.effect("connection refused (nothing sent) is retried: one task once Kie is back", () =>
      withKie({}, ({ fake, kie, logs }) =>
        Effect.gen(function*() {
          yield* Effect.promise(() => fake.stopListening())
          const fiber = yield* Effect.forkChild(kie.createTask({ prompt: "p", aspectRatio: "1:1" }))
          // Wait (bounded, real time) for the refused attempt to be logged.
          for (let i = 0; i < 200 && !logs.some((l) => l.includes("no connection")); i++) {
            yield* Effect.promise(() => new Promise((resolve) => setTimeout(resolve, 10)))
          }
          assert.isTrue(logs.some((l) => l.includes("ECONNREFUSED")), logs.join("\n"))
          yield* Effect.promise(() => fake.resumeListening())
          yield* advanceUntil(fake, isDone(fiber), "1 second")
          const taskId = yield* Fiber.join(fiber)
          assert.strictEqual(fake.counters.createTask, 1)
          assert.isTrue(fake.tasks.has(taskId))
        })))

    it.effect("a connection that never gets ready (TLS handshake unanswered) counts as nothing sent: retried, never uncertain", () =>
      Effect.gen(function*() {
        // Accepts TCP and never answers the ClientHello.
        const silent = net.createServer((socket) => void silentSockets.add(socket))
        const silentSockets = new Set<net.Socket>()
        const port = yield* Effect.callback<number>((resume) => {
          silent.listen(0, "127.0.0.1", () => resume(Effect.succeed((silent.address() as net.AddressInfo).port)))
        })
        yield* Effect.addFinalizer(() =>
          Effect.callback<void>((resume) => {
            for (const socket of silentSockets) socket.destroy()
            silent.close(() => resume(Effect.void))
          })
        )
        // KIE_REQUEST_TIMEOUT_MS 400: the connect timeout is half of it, 200 ms of real time.
        const env = { KIE_BASE_URL: `https://127.0.0.1:${port}`, KIE_REQUEST_TIMEOUT_MS: "400" }
        yield* withKie({ env }, ({ kie, logs }) =>
          Effect.gen(function*() {
            const fiber = yield* Effect.forkChild(kie.createTask({ prompt: "p", aspectRatio: "1:1" }))
            // Wait (bounded, real time) for the first attempt to give up connecting.
            for (let i = 0; i < 300 && !logs.some((l) => l.includes("no connection")); i++) {
              yield* Effect.promise(() => new Promise((resolve) => setTimeout(resolve, 10)))
            }
            const line = logs.find((l) => l.includes("no connection")) ?? ""
            assert.include(line, "ECONNECT_TIMEOUT", logs.join("\n"))
            assert.include(line, "nothing was sent")
            assert.isFalse(logs.some((l) => l.includes("may have created a task")))
            assert.isFalse(yield* isDone(fiber), "retried, not given up as uncertain")
            yield* Fiber.interrupt(fiber)
          }))
      }).pipe(Effect.scoped))

    it.effect("unreadable answers: HTML with 200 is uncertain, 502 is retried, 504 is uncertain, 403 is unexpected", () =>
      withKie({}, ({ fake, kie }) =>
        Effect.gen(function*() {
          const create = kie.createTask({ prompt: "p", aspectRatio: "1:1" })
          const html = "<html><body>error code: 1010</body></html>"

          fake.scriptCreate({ raw: html, contentType: "text/html" })
          const unreadable = yield* failureOf(fake, create)
          assert.strictEqual(unreadable._tag, "KieCreateTaskUncertain")

          fake.scriptCreate({ raw: { code: 200, msg: "success", data: {} } })
          const noTaskId = yield* failureOf(fake, create)
          assert.strictEqual(noTaskId._tag, "KieCreateTaskUncertain")

          let before = fake.counters.createTask
          fake.scriptCreate(
            ...Array.from({ length: 4 }, () => ({ raw: html, httpStatus: 502, contentType: "text/html" }))
          )
          const badGateway = yield* failureOf(fake, create)
          assert.strictEqual(badGateway._tag, "KieServerError")
          assert.strictEqual(fake.counters.createTask - before, 4)

          before = fake.counters.createTask
          fake.scriptCreate({ raw: html, httpStatus: 504, contentType: "text/html" })
          const gatewayTimeout = yield* failureOf(fake, create)
          assert.strictEqual(gatewayTimeout._tag, "KieCreateTaskUncertain")
          assert.strictEqual(fake.counters.createTask - before, 1)

          fake.scriptCreate({ raw: html, httpStatus: 403, contentType: "text/html" })
          const forbidden = yield* failureOf(fake, create)
          assert.strictEqual(forbidden._tag, "KieUnexpectedResponse")
          assert.isFalse(forbidden.retryable)
        })))

    it.effect("the budget: 21 createTasks at once, 20 reach Kie, the 21st waits for the window; no 429", () =>
      Effect.gen(function*() {
        const clock = yield* TestClock.testClockWith(Effect.succeed)
        yield* withKie(
          { fake: { now: () => clock.currentTimeMillisUnsafe() } },
          ({ fake, kie }) =>
            Effect.gen(function*() {
              const fibers = yield* Effect.forEach(
                Array.from({ length: 21 }, (_, i) => i),
                (i) => Effect.forkChild(kie.createTask({ prompt: `p${i}`, aspectRatio: "1:1" }))
              )
              yield* fake.awaitCalls("createTask", 20)
              yield* Effect.promise(() => fake.idle())
              assert.strictEqual(fake.counters.createTask, 20)
              yield* tick(fake, "10 seconds")
              assert.strictEqual(fake.counters.createTask, 20, "the 21st waits out the window and the margin")
              yield* tick(fake, "50 millis")
              yield* fake.awaitCalls("createTask", 21)
              const ids = yield* Effect.forEach(fibers, Fiber.join)
              assert.strictEqual(new Set(ids).size, 21)
              assert.strictEqual(fake.counters.rateLimited, 0)
            })
        )
      }))

    it.effect("beforeSend runs inside the permit with the callBackUrl's ref, once per attempt; its failure sends nothing", () =>
      withKie({ env: webhookEnv }, ({ fake, kie }) =>
        Effect.gen(function*() {
          const seen: Array<{ ref: string; used: number }> = []
          const budget = yield* KieRateBudget
          fake.scriptCreate({ error: 500, msg: "once" })
          const taskId = yield* successOf(
            fake,
            kie.createTask({
              prompt: "p",
              aspectRatio: "1:1",
              beforeSend: (ref) => Effect.map(budget.snapshot, (s) => void seen.push({ ref, used: s.used }))
            })
          )
          assert.lengthOf(seen, 2, "the retry runs it again")
          assert.strictEqual(seen[0]!.ref, seen[1]!.ref, "one ref per call")
          assert.isTrue(seen.every((s) => s.used >= 1), "inside the permit")
          assert.strictEqual(
            fake.tasks.get(taskId)!.callBackUrl,
            `https://bot.example/kie/callback?ref=${seen[0]!.ref}`
          )

          const before = fake.counters.createTask
          const declined = yield* kie.createTask({
            prompt: "p",
            aspectRatio: "1:1",
            beforeSend: () => Effect.fail("not now" as const)
          }).pipe(Effect.flip)
          assert.strictEqual(declined, "not now")
          assert.strictEqual(fake.counters.createTask, before, "nothing was sent")
        })))
  })

  describe("getTaskOnce", () => {
    it.effect("one request, no retry", () =>
      withKie({}, ({ fake, kie }) =>
        Effect.gen(function*() {
          fake.addTask("task_once", { steps: ["generating"] })
          fake.scriptRecordInfo({ error: 500 })
          const error = yield* kie.getTaskOnce("task_once").pipe(Effect.flip)
          assert.strictEqual(error._tag, "KieServerError")
          assert.strictEqual(fake.counters.recordInfo, 1)
          const state = yield* kie.getTaskOnce("task_once")
          assert.strictEqual(state._tag, "Generating")
        })))

    it.effect("decodes each state; `recordInfo is null` is still waiting", () =>
      withKie({}, ({ fake, kie }) =>
        Effect.gen(function*() {
          fake.addTask("task_states", {
            steps: ["null", "waiting", "queuing", "generating", {
              success: ["https://cdn.example/a.png", "https://cdn.example/b.png"]
            }]
          })
          const states = []
          for (let i = 0; i < 5; i++) states.push(yield* kie.getTaskOnce("task_states"))
          assert.deepStrictEqual(states.slice(0, 4), [
            { _tag: "Waiting", taskId: "task_states", recordMissing: true },
            { _tag: "Waiting", taskId: "task_states", recordMissing: false },
            { _tag: "Queuing", taskId: "task_states" },
            { _tag: "Generating", taskId: "task_states" }
          ])
          const success = states[4]!
          assert.strictEqual(success._tag, "Success")
          if (success._tag === "Success") {
            assert.deepStrictEqual(success.resultUrls, ["https://cdn.example/a.png", "https://cdn.example/b.png"])
            assert.strictEqual(success.param?.model, "z-image")
          }
          fake.addTask("task_failed", { steps: [{ fail: { code: "400", msg: "Content flagged as sensitive" } }] })
          const failed = yield* kie.getTaskOnce("task_failed")
          assert.include(failed, { _tag: "Fail", failCode: "400", failMsg: "Content flagged as sensitive" })
        })))

    it.effect("a fail state as KieTaskFailed: Kie's code and message; the user sees the message only when fit to show", () =>
      withKie({}, ({ fake, kie }) =>
        Effect.gen(function*() {
          fake.addTask("task_flagged", { steps: [{ fail: { code: "500", msg: "Content flagged as sensitive" } }] })
          fake.addTask("task_internal", {
            steps: [{ fail: { code: "500", msg: "java.lang.NullPointerException at com.kie.Gen(Gen.java:42)" } }]
          })
          const failedAs = (taskId: string) =>
            Effect.map(kie.getTaskOnce(taskId), (state) => {
              if (state._tag !== "Fail") return assert.fail(`expected a fail state, got ${state._tag}`)
              const { failCode, failMsg } = state
              return new KieTaskFailed({ taskId, failCode, failMsg, message: `Kie task ${taskId} failed: ${failCode}` })
            })
          const error = yield* failedAs("task_flagged")
          assert.strictEqual(error.failCode, "500")
          assert.strictEqual(error.failMsg, "Content flagged as sensitive")
          assert.isFalse(error.retryable)
          assert.strictEqual(error.userReason.en, "The image could not be generated: Content flagged as sensitive")
          assert.include(error.userReason.ru, "Content flagged as sensitive")

          const internal = yield* failedAs("task_internal")
          assert.notInclude(internal.userReason.en, "java", "a stack trace is not shown to users")
          assert.notInclude(internal.userReason.ru, "java", "a stack trace is not shown to users")
        })))

    it.effect("every documented code on recordInfo: its error and its retryable flag, one request each", () =>
      withKie({}, ({ fake, kie }) =>
        Effect.gen(function*() {
          fake.addTask("task_x")
          for (const [code, tag, retryable] of documentedCodes) {
            const before = fake.counters.recordInfo
            fake.scriptRecordInfo({ error: code, msg: `scripted ${code}` })
            const error = yield* failureOf(fake, kie.getTaskOnce("task_x"))
            assert.strictEqual(error._tag, tag, `code ${code}`)
            assert.strictEqual(error.retryable, retryable, `retryable of ${code}`)
            assert.include(error.message, String(code))
            assert.strictEqual(fake.counters.recordInfo - before, 1, `requests for ${code}`)
          }
        })))

    it.effect("a garbage answer is KieBadPayload, a reset KieTransportError: both retryable, the next poll succeeds", () =>
      withKie({}, ({ fake, kie }) =>
        Effect.gen(function*() {
          fake.addTask("task_y", { steps: ["generating"] })
          fake.scriptRecordInfo({ raw: "<html>oops</html>", contentType: "text/html" }, { reset: true })
          const garbage = yield* failureOf(fake, kie.getTaskOnce("task_y"))
          assert.strictEqual(garbage._tag, "KieBadPayload")
          assert.isTrue(garbage.retryable)
          const reset = yield* failureOf(fake, kie.getTaskOnce("task_y"))
          assert.strictEqual(reset._tag, "KieTransportError")
          assert.isTrue(reset.retryable)
          const state = yield* successOf(fake, kie.getTaskOnce("task_y"))
          assert.strictEqual(state._tag, "Generating")
          assert.strictEqual(fake.counters.recordInfo, 3)
        })))
  })
})

describe("the fake", () => {
  it.live("enforces Kie's account limit: the 21st createTask within 10 s gets 429 in the body", () =>
    Effect.scoped(Effect.gen(function*() {
      const fake = yield* FakeKie.scoped({ apiKey: TEST_KIE_KEY })
      const post = () =>
        fetch(`${fake.url}/api/v1/jobs/createTask`, {
          method: "POST",
          headers: { authorization: `Bearer ${TEST_KIE_KEY}`, "content-type": "application/json" },
          body: JSON.stringify({ model: "z-image", input: { prompt: "p", aspect_ratio: "1:1" } })
        }).then(async (r) => ({ status: r.status, body: await r.json() as unknown }))
      const answers = []
      for (let i = 0; i < 21; i++) answers.push(yield* Effect.promise(post))
      assert.deepStrictEqual(answers.slice(0, 20).map((a) => (a.body as { code: number }).code), Array(20).fill(200))
      assert.deepStrictEqual(answers[20], { status: 200, body: { code: 429, msg: "Rate limit exceeded", data: null } })
      assert.strictEqual(fake.counters.tasksCreated, 20)
    })))
})
