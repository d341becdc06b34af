/**
 * Parts of the generation engine driven alone, without its loops: real
 * PostgreSQL, FakeTelegram / FakeKie on loopback, TestClock. Each test
 * builds only the parts it drives (in a scope of its own) and calls them
 * directly, the way the engine's loops would.
 */
import { assert, describe, layer } from "@effect/vitest"
import { Effect, Fiber, FiberMap, Option } from "effect"
import { TestClock } from "effect/testing"
import { retryKeyboard, t } from "../src/texts/Messages.ts"
import * as EngineTerm from "../src/engine/EngineTerm.ts"
import * as FailureNotices from "../src/engine/FailureNotices.ts"
import { makeParts } from "../src/engine/GenerationEngine.ts"
import * as StatusMessages from "../src/engine/StatusMessages.ts"
import { Generations } from "../src/generations/Generations.ts"
import { localResult } from "./fakes/FakeKie.ts"
import * as FakeTelegram from "./fakes/FakeTelegram.ts"
import { type EngineHarness, withEngine } from "./support/EngineHarness.ts"
import { KieTestDatabase } from "./support/KieTestStack.ts"

const told = (h: EngineHarness, id: string) => Effect.map(h.row(id), (g) => Option.isSome(g.notifiedAt))

layer(KieTestDatabase, { timeout: "120 seconds" })("engine parts", (it) => {
  describe("StatusMessages", () => {
    it.effect("a tick shows the queue position; a final edit waits for a progress edit on its way; finalize removes the message", () =>
      withEngine({}, (h) =>
        Effect.scoped(Effect.gen(function*() {
          const status = yield* StatusMessages.make
          const g = yield* h.create({ userId: 701 })
          // Not edited within STATUS_EDIT_INTERVAL of the last edit (the "⏳ Генерирую..." just sent).
          yield* status.tick
          assert.lengthOf(h.telegram.calls("editMessageText"), 0)

          yield* TestClock.adjust(StatusMessages.STATUS_EDIT_INTERVAL)
          let arrive!: () => void
          h.telegram.failNext(
            "editMessageText",
            FakeTelegram.failure.delayed(new Promise((resolve) => (arrive = resolve)))
          )
          const ticking = yield* Effect.forkChild(status.tick)
          const progress = yield* h.telegram.awaitCall("editMessageText")
          assert.strictEqual(progress.params.text, t("ru").generatingQueued(1))

          // The final edit may not start while the progress edit is out.
          const finalEdit = yield* Effect.forkChild(status.beforeFinalEdit(g.id))
          yield* h.settle
          assert.isUndefined(finalEdit.pollUnsafe(), "the final edit waits")
          arrive()
          yield* Fiber.join(finalEdit)
          yield* Fiber.join(ticking)
          assert.strictEqual((yield* h.row(g.id)).statusText, t("ru").generatingQueued(1))

          yield* status.finalize(g, g.statusMessageId!)
          assert.isUndefined(h.telegram.messages(701).find((m) => m.messageId === g.statusMessageId), "deleted")
          assert.isNull((yield* h.row(g.id)).statusMessageId)
        }))))
  })

  describe("FailureNotices", () => {
    it.effect("the notice replaces the status message (retry button), once; a status message that is gone gets a new message", () =>
      withEngine({}, (h) =>
        Effect.scoped(Effect.gen(function*() {
          const generations = yield* Generations
          const term = yield* EngineTerm.make
          const notices = yield* FailureNotices.make(term, yield* StatusMessages.make)

          const a = yield* h.create({ userId: 711 })
          assert.isTrue(yield* notices.fail(a, "KieTaskFailed", "task failed", "policy violation"))
          assert.isFalse(yield* notices.fail(a, "KieTaskFailed", "task failed", "again"), "failed once")
          yield* h.advanceUntil(told(h, a.id), { maxSteps: 5, what: "told" })
          const status = h.telegram.messages(711).find((m) => m.messageId === a.statusMessageId)!
          assert.strictEqual(status.text, t("ru").failed("policy violation"))
          assert.deepStrictEqual(status.replyMarkup, retryKeyboard("ru", a.id))
          assert.isNull((yield* h.row(a.id)).statusMessageId, "the status message became the notice")
          const mark = h.telegram.mark()
          yield* notices.notify(a.id)
          assert.lengthOf(h.telegram.calls().filter((c) => c.seq > mark), 0, "told once")

          const b = yield* h.create({ userId: 712, lang: "en" })
          yield* generations.markFailed(b.id, "timeout", "too slow", t("en").timedOut).pipe(Effect.orDie)
          h.telegram.failNext(
            "editMessageText",
            FakeTelegram.failure.error(400, "Bad Request: message to edit not found")
          )
          yield* notices.notify(b.id)
          const texts = h.telegram.messages(712).filter((m) => m.text === t("en").failed(t("en").timedOut))
          assert.lengthOf(texts, 1, "a new message")
          assert.notStrictEqual(texts[0]!.messageId, b.statusMessageId)
          assert.deepStrictEqual(texts[0]!.replyMarkup, retryKeyboard("en", b.id))
          assert.isTrue(yield* told(h, b.id))
        }))))
  })

  describe("FailureNotices in a forum topic", () => {
    it.effect("a notice sent as a new message goes to the generation's topic", () =>
      withEngine({}, (h) =>
        Effect.scoped(Effect.gen(function*() {
          const generations = yield* Generations
          const notices = yield* FailureNotices.make(yield* EngineTerm.make, yield* StatusMessages.make)
          const g = yield* h.create({ userId: 713, chatId: -1000713, threadId: 42 })
          assert.strictEqual((yield* h.row(g.id)).threadId, 42)
          yield* generations.markFailed(g.id, "timeout", "too slow", t("ru").timedOut).pipe(Effect.orDie)
          h.telegram.failNext(
            "editMessageText",
            FakeTelegram.failure.error(400, "Bad Request: message to edit not found")
          )
          yield* notices.notify(g.id)
          const notice = h.telegram.messages(-1000713).find((m) => m.text === t("ru").failed(t("ru").timedOut))
          assert.strictEqual(notice?.threadId, 42)
          assert.isTrue(yield* told(h, g.id))
        }))))
  })

  describe("Sweep", () => {
    it.effect("a submitting row nobody sends fails once its request has certainly ended (polling mode); a queued one at its deadline", () =>
      withEngine({}, (h) =>
        Effect.scoped(Effect.gen(function*() {
          const generations = yield* Generations
          const { sweep } = yield* makeParts
          const queued = yield* h.create({ userId: 721 })
          const lost = yield* h.create({ userId: 722 })
          assert.isTrue(yield* generations.markSubmitting(lost.id, "ref-never-sent").pipe(Effect.orDie))

          // KIE_REQUEST_TIMEOUT_MS (30 s) + UNCERTAIN_SETTLE (10 s) after it was marked.
          yield* TestClock.adjust("39 seconds")
          yield* sweep.pass.pipe(Effect.orDie)
          assert.strictEqual((yield* h.row(lost.id)).status, "submitting", "its request may still be answered")
          yield* TestClock.adjust("2 seconds")
          yield* sweep.pass.pipe(Effect.orDie)
          const failed = yield* h.row(lost.id)
          assert.strictEqual(failed.status, "failed")
          assert.strictEqual(failed.failCode, "KieCreateTaskUncertain")
          assert.strictEqual(failed.failReason, t("ru").unconfirmed)
          assert.strictEqual((yield* h.row(queued.id)).status, "queued")

          // GENERATION_TIMEOUT_MS (5 min) after it was created.
          yield* TestClock.adjust("5 minutes")
          yield* sweep.pass.pipe(Effect.orDie)
          const expired = yield* h.row(queued.id)
          assert.strictEqual(expired.status, "failed")
          assert.strictEqual(expired.failCode, "timeout")
          yield* h.advanceUntil(
            Effect.zipWith(told(h, queued.id), told(h, lost.id), (x, y) => x && y),
            { maxSteps: 5, what: "both told" }
          )
          assert.strictEqual(h.kie.counters.createTask, 0, "nothing was sent to Kie")
        }))))
  })

  describe("Submission", () => {
    it.effect("queued generations stay rows: with 60 waiting and the budget spent, the term holds at most the one waiting for a slot", () =>
      withEngine(
        { fake: { defaultTask: { steps: ["generating", "generating", localResult()] } } },
        (h) =>
          Effect.scoped(Effect.gen(function*() {
            const generations = yield* Generations
            for (let user = 731; user < 791; user++) yield* h.create({ userId: user, statusMessage: false })
            const { term, submission } = yield* makeParts
            /** What the term holds in memory for the generations it submits. */
            const held = Effect.map(FiberMap.size(term.submissionFibers), (fibers) => ({
              fibers,
              phases: term.submissions.size
            }))
            const counts = Effect.orDie(generations.counts)
            const queued = Effect.map(counts, (c) => c.queued)
            yield* Effect.forkScoped(submission.loop)

            /** `submitted` rows, once the term holds at most one submission (the one waiting for a slot). */
            const settledAt = (submitted: number) =>
              Effect.zipWith(counts, held, (c, h) => c.submitted === submitted && h.fibers <= 1 && h.phases <= 1)

            // The budget (20 per 10 s) lets 20 go at once; the other 40 wait as rows, not as fibers.
            yield* h.advanceUntil(settledAt(20), { step: "10 millis", maxSteps: 500, what: "20 submitted, 1 held" })
            assert.strictEqual(h.kie.counters.createTask, 20, "no more than the budget")
            assert.strictEqual(yield* queued, 40)

            // The window moves on: the next 20 go, the rest still wait as rows.
            yield* h.advanceUntil(settledAt(40), { step: "500 millis", maxSteps: 40, what: "40 submitted, 1 held" })
            assert.strictEqual(h.kie.counters.createTask, 40)
            assert.strictEqual(yield* queued, 20)
          }))
      ))
  })
})
