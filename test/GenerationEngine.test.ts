/**
 * The generation engine against real PostgreSQL, a fake Kie and a fake Bot
 * API on loopback, with TestClock for every wait (polls, deadlines, the
 * createTask budget, backoffs).
 */
import { assert, describe, layer } from "@effect/vitest"
import { Effect, Fiber, Option } from "effect"
import { Generations, type GenerationStatus } from "../src/generations/Generations.ts"
import { healthFields } from "../src/generations/GenerationsHealth.ts"
import { KieCallbacks } from "../src/kie/KieCallback.ts"
import { Telegram } from "../src/telegram/Telegram.ts"
import { doneKeyboard, retryKeyboard, t } from "../src/texts/Messages.ts"
import { localResult } from "./fakes/FakeKie.ts"
import * as FakeTelegram from "./fakes/FakeTelegram.ts"
import { type EngineHarness, withEngine } from "./support/EngineHarness.ts"
import { makePng } from "./support/images.ts"
import { TEST_KIE_KEY } from "./support/TestConfig.ts"
import { KieTestDatabase } from "./support/KieTestStack.ts"

const statusOf = (h: EngineHarness, id: string) => Effect.map(h.row(id), (g) => g.status)
const reached = (h: EngineHarness, id: string, status: GenerationStatus) =>
  Effect.map(statusOf(h, id), (s) => s === status)
/** Delivered, and its status message removed (that comes right after). */
const finalized = (h: EngineHarness, id: string) =>
  Effect.map(h.row(id), (g) => g.status === "delivered" && g.statusMessageId === null)

layer(KieTestDatabase, { timeout: "120 seconds" })("GenerationEngine", (it) => {
  describe("the way through", () => {
    it.effect("queued → submitted → succeeded → delivered: a photo with ✅ Готово! and the keyboard, the original, the status message removed", () =>
      withEngine({}, (h) =>
        Effect.gen(function*() {
          const png = makePng(320, 200)
          h.kie.serveResult("result.png", png)
          const g = yield* h.create({ userId: 101, prompt: "a red fox in the snow", aspectRatio: "16:9" })
          yield* h.startEngine
          yield* h.advanceUntil(finalized(h, g.id), { what: "delivered, status message removed" })

          assert.strictEqual(h.kie.counters.createTask, 1)
          const task = [...h.kie.tasks.values()][0]!
          assert.deepStrictEqual(task.body.input.prompt, "a red fox in the snow")
          assert.deepStrictEqual(task.body.input.aspect_ratio, "16:9")

          const photos = h.media(101, "photo")
          assert.lengthOf(photos, 1)
          assert.include(photos[0]!.caption, "✅ Готово!")
          assert.deepStrictEqual(photos[0]!.replyMarkup, doneKeyboard("ru", g.id))
          const upload = h.telegram.calls("sendPhoto")[0]!
          assert.strictEqual(upload.files[0]?.size, png.length, "the downloaded bytes are uploaded")
          const documents = h.media(101, "document")
          assert.lengthOf(documents, 1)
          assert.strictEqual(documents[0]!.caption, t("ru").originalCaption)
          assert.isUndefined(
            h.telegram.messages(101).find((m) => m.messageId === g.statusMessageId),
            "the status message is deleted"
          )

          const row = yield* h.row(g.id)
          assert.strictEqual(row.kieTaskId, task.taskId)
          assert.strictEqual(row.photoMessageId, photos[0]!.messageId)
          assert.strictEqual(row.documentMessageId, documents[0]!.messageId)
          assert.isNull(row.statusMessageId)
          const transitions = h.logs.lines().filter((l) => l.message.startsWith(`[GEN] generation ${g.id}: `))
          assert.includeMembers(
            transitions.map((l) => l.message.replace(/ \(task .*$/, "").replace(/: message \d+$/, "")),
            [
              `[GEN] generation ${g.id}: queued → submitting`,
              `[GEN] generation ${g.id}: submitting → submitted`,
              `[GEN] generation ${g.id}: submitted → succeeded`,
              `[GEN] generation ${g.id}: succeeded → delivered`
            ]
          )
          assert.notInclude(h.logs.lines().filter((l) => l.level === "INFO").map((l) => l.raw).join("\n"), "red fox")
        })))
  })

  describe("results: callbacks and polling", () => {
    const webhook = { PUBLIC_URL: "https://bot.example", TELEGRAM_WEBHOOK_SECRET: "test_webhook_secret-0123456789" }

    it.effect("a trusted callback (it carries the task's ref) settles the generation without any recordInfo", () =>
      withEngine(
        {
          callbackServer: true,
          env: { ...webhook, KIE_POLL_INTERVAL_MS: "600000" },
          fake: { defaultTask: { steps: ["generating"], final: localResult() } }
        },
        (h) =>
          Effect.gen(function*() {
            const g = yield* h.create({ userId: 301 })
            yield* h.startEngine
            yield* h.advanceUntil(reached(h, g.id, "submitted"))
            const taskId = (yield* h.row(g.id)).kieTaskId!
            assert.strictEqual(yield* h.sendCallback(taskId), 200)
            yield* h.advanceUntil(reached(h, g.id, "delivered"), { maxSteps: 20 })
            assert.strictEqual(h.kie.counters.recordInfo, 0, "the callback alone settled it")
            assert.lengthOf(h.media(301, "photo"), 1)
          })
      ))

    it.effect("a callback without the ref is only a hint: recordInfo is asked at once, and its answer settles it", () =>
      withEngine(
        {
          callbackServer: true,
          env: { ...webhook, KIE_POLL_INTERVAL_MS: "600000" },
          fake: { defaultTask: { steps: [localResult()] } }
        },
        (h) =>
          Effect.gen(function*() {
            const g = yield* h.create({ userId: 302 })
            yield* h.startEngine
            yield* h.advanceUntil(reached(h, g.id, "submitted"))
            const taskId = (yield* h.row(g.id)).kieTaskId!
            assert.strictEqual(yield* h.sendCallback(taskId, { withoutRef: true }), 200)
            yield* h.advanceUntil(reached(h, g.id, "delivered"), { maxSteps: 20 })
            assert.strictEqual(h.kie.counters.recordInfo, 1, "one recordInfo, asked because of the hint")
          })
      ))

    it.effect("polling alone settles many generations; recordInfo never exceeds 10 in any second", () =>
      withEngine(
        {
          env: { KIE_POLL_INTERVAL_MS: "1000" },
          fake: { defaultTask: { steps: ["waiting", "generating", "generating", "generating", localResult()] } }
        },
        (h) =>
          Effect.gen(function*() {
            const created = []
            for (let user = 310; user < 340; user++) {
              created.push(yield* h.create({ userId: user, statusMessage: false }))
            }
            yield* h.startEngine
            const all = Effect.map(
              Effect.forEach(created, (g) => statusOf(h, g.id)),
              (statuses) => statuses.every((s) => s === "delivered")
            )
            yield* h.advanceUntil(all, { step: "200 millis", maxSteps: 600, what: "all delivered" })
            const times = h.kie.requests.filter((r) => r.path.startsWith("/api/v1/jobs/recordInfo")).map((r) => r.at)
              .sort((a, b) => a - b)
            assert.isAtLeast(times.length, 30 * 5)
            for (let i = 0; i + 10 < times.length; i++) {
              assert.isAbove(times[i + 10]! - times[i]!, 1000, `recordInfo ${i}..${i + 10} within one second`)
            }
            assert.strictEqual(h.kie.counters.createTask, 30)
          })
      ))
  })

  describe("deadlines", () => {
    it.effect("past GENERATION_TIMEOUT_MS: failed, and the user told in the status message with the retry button", () =>
      withEngine(
        { env: { GENERATION_TIMEOUT_MS: "60000" }, fake: { defaultTask: { steps: ["generating"] } } },
        (h) =>
          Effect.gen(function*() {
            const g = yield* h.create({ userId: 401 })
            yield* h.startEngine
            yield* h.advanceUntil(reached(h, g.id, "failed"), { maxSteps: 120 })
            const row = yield* h.row(g.id)
            assert.strictEqual(row.failCode, "timeout")
            assert.strictEqual(row.failReason, t("ru").timedOut)
            yield* h.advanceUntil(Effect.map(h.row(g.id), (r) => Option.isSome(r.notifiedAt)), { maxSteps: 10 })
            const status = h.telegram.messages(401).find((m) => m.messageId === g.statusMessageId)!
            assert.strictEqual(status.text, t("ru").failed(t("ru").timedOut))
            assert.deepStrictEqual(status.replyMarkup, retryKeyboard("ru", g.id))
            // While it ran, the status message showed the elapsed time, at most every 10 s.
            const edits = h.telegram.calls("editMessageText").filter((c) => c.params.message_id === g.statusMessageId)
            const progress = edits.filter((c) => String(c.params.text).startsWith("⏳ Генерирую... 0:"))
            assert.isAtLeast(progress.length, 3)
            assert.isAtMost(progress.length, 7, "at most one edit per 10 s over 60 s")
            assert.lengthOf(h.media(401, "photo"), 0)
            // Told once: more sweeps change nothing.
            const mark = h.telegram.mark()
            yield* h.advance(12)
            assert.lengthOf(h.telegram.calls().filter((c) => c.seq > mark), 0)
          })
      ))

    it.effect("a progress edit still on its way when the generation fails never overwrites the failure notice", () =>
      withEngine(
        { env: { GENERATION_TIMEOUT_MS: "64000" }, fake: { defaultTask: { steps: ["generating"] } } },
        (h) =>
          Effect.gen(function*() {
            const g = yield* h.create({ userId: 404 })
            yield* h.startEngine
            // A progress edit showing at least `seconds` elapsed. Which second a
            // tick lands on drifts by a second or two when its queries outlast a
            // clock step (a loaded machine), so the edits are "0:50" or a little later.
            const progressEdit = (seconds: number) => () =>
              h.telegram.calls("editMessageText").some((c) => {
                const shown = /^⏳ Генерирую\.\.\. (\d+):(\d\d)$/.exec(String(c.params.text))
                return c.params.message_id === g.statusMessageId && shown !== null &&
                  Number(shown[1]) * 60 + Number(shown[2]) >= seconds
              })
            yield* h.advanceUntil(Effect.sync(progressEdit(50)), { maxSteps: 70 })
            // The next progress edit ("1:00" or so) reaches Telegram only when we
            // say so: the deadline (64 s) passes while it is on its way.
            let arrive!: () => void
            h.telegram.failNext(
              "editMessageText",
              FakeTelegram.failure.delayed(new Promise((resolve) => (arrive = resolve)))
            )
            yield* h.advanceUntil(Effect.sync(progressEdit(60)), { maxSteps: 15 })
            yield* h.advanceUntil(reached(h, g.id, "failed"), { maxSteps: 10 })
            yield* h.advance(3)
            arrive()
            yield* h.advanceUntil(Effect.map(h.row(g.id), (r) => Option.isSome(r.notifiedAt)), { maxSteps: 10 })
            const status = h.telegram.messages(404).find((m) => m.messageId === g.statusMessageId)!
            assert.strictEqual(status.text, t("ru").failed(t("ru").timedOut))
            assert.deepStrictEqual(status.replyMarkup, retryKeyboard("ru", g.id))
            // Both edits reached Telegram: the progress edit first, the notice last.
            const edits = h.telegram.calls("editMessageText").filter((c) => c.params.message_id === g.statusMessageId)
            assert.strictEqual(edits.at(-1)!.params.text, t("ru").failed(t("ru").timedOut))
          })
      ))

    it.effect("a generation queued past its deadline is failed, never sent to Kie", () =>
      withEngine({ env: { GENERATION_TIMEOUT_MS: "10000", KIE_CREATE_RATE: "1/60s" } }, (h) =>
        Effect.gen(function*() {
          const a = yield* h.create({ userId: 402 })
          const b = yield* h.create({ userId: 403, lang: "en" })
          yield* h.startEngine
          yield* h.advanceUntil(reached(h, b.id, "failed"), { maxSteps: 30 })
          assert.strictEqual(h.kie.counters.createTask, 1, "only the first was sent")
          yield* h.advanceUntil(Effect.map(h.row(b.id), (r) => Option.isSome(r.notifiedAt)), { maxSteps: 10 })
          const status = h.telegram.messages(403).find((m) => m.messageId === b.statusMessageId)!
          assert.strictEqual(status.text, t("en").failed(t("en").timedOut))
          assert.notStrictEqual((yield* h.row(a.id)).status, "queued")
        })))
  })

  describe("Kie refusing or failing", () => {
    it.effect("402 (no credits): the users are told plainly, ERROR once, nothing sent while paused; after the pause it works again", () =>
      withEngine({}, (h) =>
        Effect.gen(function*() {
          h.kie.scriptCreate(...Array.from({ length: 3 }, () => ({ error: 402, msg: "Insufficient credits" })))
          const first = [yield* h.create({ userId: 501 }), yield* h.create({ userId: 502, lang: "en" })]
          yield* h.startEngine
          const told = (ids: ReadonlyArray<string>) =>
            Effect.map(
              Effect.forEach(ids, (id) => h.row(id)),
              (rows) => rows.every((r) => r.status === "failed" && Option.isSome(r.notifiedAt))
            )
          yield* h.advanceUntil(told(first.map((g) => g.id)), { maxSteps: 20 })
          const sentBefore = h.kie.counters.createTask
          assert.isAtLeast(sentBefore, 1)
          assert.strictEqual(h.kie.counters.tasksCreated, 0)

          // While paused, a new generation is told at once and never sent.
          const during = yield* h.create({ userId: 503 })
          yield* h.advanceUntil(told([during.id]), { maxSteps: 10 })
          assert.strictEqual(h.kie.counters.createTask, sentBefore, "Kie is not asked while paused")

          const reasonRu = "Сервис генерации временно недоступен. Попробуйте позже."
          // Told in the status message, or (the one failed before its status message was
          // recorded) in a new message, the late status message then removed: one notice either way.
          const onlyNotices = Effect.sync(() =>
            [501, 503].every((chat) => h.telegram.messages(chat).filter((m) => m.kind === "text").length === 1)
          )
          yield* h.advanceUntil(onlyNotices, { maxSteps: 15, what: "late status messages removed" })
          for (const [g, chat] of [[first[0]!, 501], [during, 503]] as const) {
            const texts = h.telegram.messages(chat).filter((m) => m.kind === "text")
            assert.lengthOf(texts, 1, `chat ${chat}: only the notice remains`)
            assert.strictEqual(texts[0]!.text, t("ru").failed(reasonRu))
            assert.deepStrictEqual(texts[0]!.replyMarkup, retryKeyboard("ru", g.id))
          }
          assert.include(h.telegram.messages(502).find((m) => m.kind === "text")?.text, "temporarily unavailable")
          assert.strictEqual((yield* h.row(first[0]!.id)).failCode, "KieInsufficientCredits")
          const errors = h.logs.lines().filter((l) => l.level === "ERROR" && l.message.includes("an operator must act"))
          assert.lengthOf(errors, 1)
          const health = yield* healthFields
          assert.strictEqual(health.generation_engine, "running")
          assert.isString(health.kie_paused_until, "/health shows the pause")
          assert.strictEqual(health.inflight_generations, 0)

          // The pause ends (2 minutes); the next generation goes through.
          yield* h.advance(121)
          h.kie.clearCreateScript()
          const after = yield* h.create({ userId: 504 })
          yield* h.advanceUntil(reached(h, after.id, "delivered"), { maxSteps: 30 })
          assert.isTrue(h.logs.lines().some((l) => l.message === "[GEN] Kie accepts tasks again"))
        })))

    it.effect("500 after the client's retries: back to queued, submissions pause, then the same generation is sent and delivered", () =>
      withEngine({}, (h) =>
        Effect.gen(function*() {
          h.kie.scriptCreate(...Array.from({ length: 4 }, () => ({ error: 500, msg: "server error" })))
          const g = yield* h.create({ userId: 511 })
          yield* h.startEngine
          yield* h.advanceUntil(
            Effect.sync(() =>
              h.logs.lines().some((l) => l.message.includes(`generation ${g.id}: submitting → queued`))
            ),
            { maxSteps: 30 }
          )
          assert.strictEqual((yield* h.row(g.id)).status, "queued")
          yield* h.advanceUntil(reached(h, g.id, "delivered"), { maxSteps: 60 })
          assert.strictEqual(h.kie.counters.createTask, 5)
          assert.strictEqual(h.kie.counters.tasksCreated, 1)
          assert.isTrue(
            h.logs.lines().some((l) => l.level === "WARN" && l.message.includes("Kie is not accepting tasks"))
          )
        })))

    it.effect("a Kie task that fails: the user gets Kie's reason and the retry button", () =>
      withEngine(
        { fake: { defaultTask: { steps: [{ fail: { code: "500", msg: "content policy violation" } }] } } },
        (h) =>
          Effect.gen(function*() {
            const g = yield* h.create({ userId: 521 })
            yield* h.startEngine
            yield* h.advanceUntil(Effect.map(h.row(g.id), (r) => Option.isSome(r.notifiedAt)))
            const row = yield* h.row(g.id)
            assert.strictEqual(row.failCode, "KieTaskFailed")
            const text = h.telegram.messages(521).find((m) => m.messageId === g.statusMessageId)?.text
            assert.include(text, "❌ Не получилось создать картинку")
            assert.include(text, "content policy violation")
          })
      ))

    it.effect("Kie's failure message echoing the API key: the key is stored nowhere and shown to no one", () =>
      withEngine(
        { fake: { defaultTask: { steps: [{ fail: { code: "401", msg: `bad request for key ${TEST_KIE_KEY}` } }] } } },
        (h) =>
          Effect.gen(function*() {
            const g = yield* h.create({ userId: 522 })
            yield* h.startEngine
            yield* h.advanceUntil(Effect.map(h.row(g.id), (r) => Option.isSome(r.notifiedAt)))
            const row = yield* h.row(g.id)
            assert.strictEqual(row.failCode, "KieTaskFailed")
            assert.include(row.failMessage, "bad request for key")
            for (const stored of [row.failMessage, row.failReason]) assert.notInclude(stored ?? "", TEST_KIE_KEY)
            for (const message of h.telegram.messages(522)) assert.notInclude(message.text ?? "", TEST_KIE_KEY)
          })
      ))
  })

  describe("createTask outcome unknown", () => {
    const webhook = { PUBLIC_URL: "https://bot.example", TELEGRAM_WEBHOOK_SECRET: "test_webhook_secret-0123456789" }

    it.effect("polling mode: a createTask timeout fails the generation (retry button), never a second createTask", () =>
      withEngine({ env: { KIE_REQUEST_TIMEOUT_MS: "5000" } }, (h) =>
        Effect.gen(function*() {
          h.kie.scriptCreate({ hang: true })
          const g = yield* h.create({ userId: 601 })
          yield* h.startEngine
          yield* h.advanceUntil(Effect.map(h.row(g.id), (r) => Option.isSome(r.notifiedAt)), { maxSteps: 30 })
          const row = yield* h.row(g.id)
          assert.strictEqual(row.failCode, "KieCreateTaskUncertain")
          assert.strictEqual(h.kie.counters.createTask, 1)
          assert.deepStrictEqual(
            h.telegram.messages(601).find((m) => m.messageId === g.statusMessageId)?.replyMarkup,
            retryKeyboard("ru", g.id)
          )
        })))

    it.effect("webhook mode: after a createTask timeout, Kie's callback reveals the task by its ref and the photo is delivered", () =>
      withEngine(
        {
          callbackServer: true,
          env: { ...webhook, KIE_REQUEST_TIMEOUT_MS: "5000" },
          fake: { defaultTask: { steps: [localResult()] } }
        },
        (h) =>
          Effect.gen(function*() {
            h.kie.scriptCreate({ hang: true })
            const g = yield* h.create({ userId: 602 })
            yield* h.startEngine
            yield* h.advanceUntil(
              Effect.sync(() => h.logs.lines().some((l) => l.message.includes("waiting for Kie's callback"))),
              { maxSteps: 30 }
            )
            assert.strictEqual((yield* h.row(g.id)).status, "submitting")
            const taskId = [...h.kie.tasks.keys()][0]!
            assert.strictEqual(yield* h.sendCallback(taskId), 200)
            yield* h.advanceUntil(reached(h, g.id, "delivered"), { maxSteps: 20 })
            assert.strictEqual((yield* h.row(g.id)).kieTaskId, taskId)
            assert.strictEqual(h.kie.counters.createTask, 1)
            assert.lengthOf(h.media(602, "photo"), 1)
          })
      ))

    it.effect("after a failover: a submitting row whose task id was stored is resumed; one without is failed (polling mode)", () =>
      withEngine({}, (h) =>
        Effect.gen(function*() {
          const generations = yield* Generations
          const callbacks = yield* KieCallbacks
          const known = yield* h.create({ userId: 611 })
          const unknown = yield* h.create({ userId: 612 })
          // A dead leader marked both and sent createTask; only the first answer arrived (bindTask).
          yield* generations.markSubmitting(known.id, "ref-known")
          yield* generations.markSubmitting(unknown.id, "ref-unknown")
          yield* callbacks.registerPending("ref-known")
          yield* callbacks.bindTask("ref-known", "task-known")
          h.kie.addTask("task-known", { steps: [localResult()] })

          yield* h.startEngine
          yield* h.advanceUntil(
            Effect.zipWith(
              reached(h, known.id, "delivered"),
              Effect.map(h.row(unknown.id), (r) => Option.isSome(r.notifiedAt)),
              (x, y) => x && y
            ),
            { maxSteps: 60 }
          )
          assert.strictEqual((yield* h.row(unknown.id)).failCode, "KieCreateTaskUncertain")
          assert.strictEqual(
            h.telegram.messages(612).find((m) => m.messageId === unknown.statusMessageId)?.text,
            t("ru").failed(t("ru").unconfirmed)
          )
          assert.strictEqual(h.kie.counters.createTask, 0, "neither is sent again")
        })))
  })

  describe("delivery", () => {
    it.effect("an expired result URL: retried with backoff, then failed with the retry button", () =>
      withEngine({}, (h) =>
        Effect.gen(function*() {
          h.kie.scriptResults(...Array.from({ length: 4 }, () => ({ status: 404 })))
          const g = yield* h.create({ userId: 701 })
          yield* h.startEngine
          yield* h.advanceUntil(Effect.map(h.row(g.id), (r) => Option.isSome(r.notifiedAt)), { maxSteps: 60 })
          assert.strictEqual((yield* h.row(g.id)).failCode, "download_failed")
          assert.strictEqual(h.kie.counters.result, 4)
          assert.strictEqual(
            h.telegram.messages(701).find((m) => m.messageId === g.statusMessageId)?.text,
            t("ru").failed(t("ru").deliveryFailed)
          )
          assert.lengthOf(h.telegram.calls("sendPhoto"), 0)
        })))

    it.effect("a chat that blocked the bot: failed as undeliverable, no retries, nothing more sent", () =>
      withEngine({}, (h) =>
        Effect.gen(function*() {
          const g = yield* h.create({ userId: 702 })
          h.telegram.blockChat(702)
          yield* h.startEngine
          yield* h.advanceUntil(Effect.map(h.row(g.id), (r) => Option.isSome(r.notifiedAt)), { maxSteps: 30 })
          assert.strictEqual((yield* h.row(g.id)).failCode, "chat_blocked")
          const sends = h.telegram.calls().filter((c) => c.params.chat_id === 702 && c.method !== "sendMessage").length
          yield* h.advance(30)
          assert.strictEqual(
            h.telegram.calls().filter((c) => c.params.chat_id === 702 && c.method !== "sendMessage").length,
            sends,
            "no retry loop"
          )
          assert.lengthOf(h.telegram.calls("sendPhoto"), 1)
        })))

    it.effect("an image Telegram would not take as a photo goes as a document only, with the caption and keyboard", () =>
      withEngine({}, (h) =>
        Effect.gen(function*() {
          h.kie.serveResult("result.png", makePng(2100, 100))
          const g = yield* h.create({ userId: 703 })
          yield* h.startEngine
          yield* h.advanceUntil(reached(h, g.id, "delivered"))
          assert.lengthOf(h.telegram.calls("sendPhoto"), 0)
          const documents = h.media(703, "document")
          assert.lengthOf(documents, 1)
          assert.include(documents[0]!.caption, "✅ Готово!")
          assert.deepStrictEqual(documents[0]!.replyMarkup, doneKeyboard("ru", g.id))
        })))

    it.effect("a status message recorded after the generation finished is removed", () =>
      withEngine({}, (h) =>
        Effect.gen(function*() {
          const generations = yield* Generations
          const g = yield* h.create({ userId: 704, statusMessage: false })
          yield* h.startEngine
          yield* h.advanceUntil(reached(h, g.id, "delivered"))
          const late = yield* Effect.flatMap(
            Effect.service(Telegram),
            (tg) => tg.sendMessage({ chat_id: 704, text: t("ru").generating })
          )
          yield* generations.setStatusMessage(g.id, late.message_id, t("ru").generating)
          yield* h.advanceUntil(Effect.map(h.row(g.id), (r) => r.statusMessageId === null), { maxSteps: 10 })
          assert.isUndefined(h.telegram.messages(704).find((m) => m.messageId === late.message_id))
        })))
  })

  describe("failover", () => {
    it.effect("a leader killed between createTask and the result: the next leader polls the stored task; one createTask, one photo", () =>
      withEngine({ fake: { defaultTask: { steps: ["generating"] } } }, (h) =>
        Effect.gen(function*() {
          const g = yield* h.create({ userId: 201 })
          const first = yield* h.startEngine
          yield* h.advanceUntil(
            Effect.map(h.row(g.id), (r) => r.status === "submitted" && h.kie.counters.recordInfo >= 1),
            { what: "submitted and polled" }
          )
          yield* first.lose
          const taskId = (yield* h.row(g.id)).kieTaskId!
          h.kie.setTask(taskId, { steps: ["generating", localResult()] })

          yield* h.startEngine
          yield* h.advanceUntil(reached(h, g.id, "delivered"), { what: "delivered by the second leader" })
          assert.strictEqual(h.kie.counters.createTask, 1, "never a second createTask")
          assert.lengthOf(h.media(201, "photo"), 1)
          assert.lengthOf(h.telegram.calls("sendPhoto"), 1)
        })))

    it.effect("killed between success and delivery (sendPhoto hangs): the next leader delivers once", () =>
      withEngine({}, (h) =>
        Effect.gen(function*() {
          const g = yield* h.create({ userId: 202 })
          h.telegram.failNext("sendPhoto", FakeTelegram.failure.hang())
          const first = yield* h.startEngine
          yield* h.advanceUntil(Effect.sync(() => h.telegram.calls("sendPhoto").length === 1), {
            what: "sendPhoto sent"
          })
          assert.strictEqual((yield* h.row(g.id)).status, "succeeded")
          yield* first.lose
          // Interrupting the engine aborts the upload: Telegram never answered it.
          yield* h.telegram.awaitAborted(h.telegram.calls("sendPhoto")[0]!)

          yield* h.startEngine
          yield* h.advanceUntil(reached(h, g.id, "delivered"), { what: "delivered by the second leader" })
          assert.lengthOf(h.media(202, "photo"), 1, "one photo in the chat")
          assert.lengthOf(h.media(202, "document"), 1, "one original")
          assert.strictEqual(h.kie.counters.createTask, 1)
        })))

    it.effect("killed after the photo went out (the original hangs): the next leader sends no second photo, only the original", () =>
      withEngine({}, (h) =>
        Effect.gen(function*() {
          const g = yield* h.create({ userId: 203 })
          h.telegram.failNext("sendDocument", FakeTelegram.failure.hang())
          const first = yield* h.startEngine
          yield* h.advanceUntil(Effect.sync(() => h.telegram.calls("sendDocument").length === 1), {
            what: "original sent"
          })
          const afterPhoto = yield* h.row(g.id)
          assert.strictEqual(afterPhoto.status, "succeeded")
          assert.strictEqual(
            afterPhoto.photoMessageId,
            h.media(203, "photo")[0]?.messageId,
            "the photo is recorded at once"
          )
          yield* first.lose

          yield* h.startEngine
          yield* h.advanceUntil(finalized(h, g.id), { what: "delivered by the second leader" })
          assert.lengthOf(h.telegram.calls("sendPhoto"), 1, "no second photo")
          assert.lengthOf(h.media(203, "photo"), 1)
          assert.lengthOf(h.media(203, "document"), 1, "the original, once")
          assert.isUndefined(h.telegram.messages(203).find((m) => m.messageId === g.statusMessageId))
        })))

    it.effect("a succeeded row whose result message is recorded is only marked delivered", () =>
      withEngine({ env: { SEND_ORIGINAL_DOCUMENT: "false" } }, (h) =>
        Effect.gen(function*() {
          const generations = yield* Generations
          const g = yield* h.create({ userId: 204 })
          yield* generations.markSubmitting(g.id, "ref-204")
          const task = h.kie.addTask("task-204", { steps: [localResult()] })
          yield* generations.markSubmitted(g.id, task.taskId, g.createdAt)
          yield* generations.markSucceeded(g.id, [h.kie.resultUrl()])
          yield* generations.setPhotoMessage(g.id, 999)
          yield* h.startEngine
          yield* h.advanceUntil(reached(h, g.id, "delivered"))
          assert.lengthOf(h.telegram.calls("sendPhoto"), 0)
          assert.lengthOf(h.telegram.calls("sendDocument"), 0)
          assert.strictEqual(h.kie.counters.result, 0, "nothing downloaded")
        })))

    it.effect("graceful release: a delivery in flight is finished before the engine stops", () =>
      withEngine({}, (h) =>
        Effect.gen(function*() {
          const g = yield* h.create({ userId: 207 })
          let open: () => void = () => {}
          h.kie.scriptResults({ until: new Promise<void>((resolve) => (open = resolve)) })
          const leader = yield* h.startEngine
          yield* h.advanceUntil(Effect.sync(() => h.kie.counters.result === 1), { what: "download started" })
          const releasing = yield* Effect.forkChild(leader.release)
          yield* h.logs.awaitLine((l) => l.message.startsWith("[GEN] draining:"))
          assert.strictEqual((yield* h.row(g.id)).status, "succeeded", "still downloading")
          open()
          yield* Fiber.join(releasing)
          assert.strictEqual((yield* h.row(g.id)).status, "delivered", "the release waited for the delivery")
          assert.lengthOf(h.media(207, "photo"), 1)
          assert.isTrue(
            h.logs.lines().some((l) => l.message.startsWith("[GEN] draining: 0 createTask request(s) and 1 "))
          )
        })))

    it.effect("graceful release: a submission waiting for the budget stays queued and is sent by the next leader", () =>
      withEngine({ env: { KIE_CREATE_RATE: "1/10s" } }, (h) =>
        Effect.gen(function*() {
          const a = yield* h.create({ userId: 205 })
          const b = yield* h.create({ userId: 206 })
          const first = yield* h.startEngine
          yield* h.advanceUntil(reached(h, a.id, "submitted"))
          yield* h.settle
          assert.strictEqual((yield* h.row(b.id)).status, "queued", "the second waits for the window")
          yield* first.release
          assert.strictEqual((yield* h.row(b.id)).status, "queued")
          assert.strictEqual(h.kie.counters.createTask, 1)

          yield* h.startEngine
          yield* h.advanceUntil(
            Effect.zipWith(reached(h, a.id, "delivered"), reached(h, b.id, "delivered"), (x, y) => x && y)
          )
          assert.strictEqual(h.kie.counters.createTask, 2)
          assert.strictEqual(h.kie.counters.rateLimited, 0)
        })))
  })
})
