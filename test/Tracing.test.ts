/**
 * The traced operations an operator follows, recorded by an in-memory tracer
 * given to the whole service (real HTTP, a real database, the fake Bot API and
 * the fake Kie): an update from Telegram's webhook to the bot's reply, and a
 * generation from queued to delivered. Each span must exist under the name an
 * operator searches for, carry the id that ties it to its update or
 * generation, and hang under the span that caused it.
 *
 * An update crosses the database (stored by the webhook, claimed by the
 * dispatcher), and so does a generation (recorded by the chat flow, picked up
 * by the engine): each side is its own trace, tied by `update_id` or
 * `generation_id`.
 */
import { assert, describe, it } from "@effect/vitest"
import { Effect, Option, Tracer } from "effect"
import { SqlClient } from "effect/sql/SqlClient"
import { FakeKie, localResult } from "./fakes/FakeKie.ts"
import * as FakeTelegram from "./fakes/FakeTelegram.ts"
import { awaitInboxIdle, freePort, startApp } from "./support/TestApp.ts"
import { TEST_KIE_KEY, TEST_WEBHOOK_SECRET } from "./support/TestConfig.ts"
import { freshDatabaseUrl } from "./support/TestDatabase.ts"

/** A tracer that keeps every span it starts, in start order. */
const makeRecordingTracer = () => {
  const spans: Array<Tracer.Span> = []
  const tracer = Tracer.make({
    span(options) {
      const span = new Tracer.NativeSpan(options)
      spans.push(span)
      return span
    }
  })
  return { tracer, spans }
}

/** The span's parent, when it is one of ours (not an external span). */
const parentOf = (span: Tracer.Span): Tracer.Span | undefined => {
  const parent = Option.getOrUndefined(span.parent)
  return parent?._tag === "Span" ? parent : undefined
}

/** Whether `ancestor` is on the parent chain of `span`. */
const isUnder = (ancestor: Tracer.Span) => (span: Tracer.Span): boolean => {
  for (let p = parentOf(span); p !== undefined; p = parentOf(p)) if (p === ancestor) return true
  return false
}

const hasAttribute = (key: string, value: unknown) => (span: Tracer.Span) => span.attributes.get(key) === value

/** The recorded spans as an indented tree (SQL statements left out), for a failure's message. */
const treeOf = (spans: ReadonlyArray<Tracer.Span>) => {
  const lines: Array<string> = []
  const walk = (span: Tracer.Span, depth: number) => {
    if (span.name === "postgres" || span.name === "sql.transaction") return
    lines.push(`${"  ".repeat(depth)}${span.name} ${JSON.stringify(Object.fromEntries(span.attributes))}`)
    for (const child of spans.filter((s) => parentOf(s) === span)) walk(child, depth + 1)
  }
  for (const root of spans.filter((s) => parentOf(s) === undefined)) walk(root, 0)
  return lines.join("\n")
}

/** The first span named `name` that `where` accepts; fails the test, showing the tree, if there is none. */
const spanOf = (spans: ReadonlyArray<Tracer.Span>, name: string, where: (span: Tracer.Span) => boolean) => {
  const found = spans.find((s) => s.name === name && where(s))
  if (found === undefined) assert.fail(`no ${name} span where expected; recorded:\n${treeOf(spans)}`)
  return found
}

/**
 * The whole service on a fresh database and a fake Bot API, with `envOf(port)`
 * on top, every span it starts recorded (the tracer is given to the build, so
 * every fiber the service forks inherits it).
 */
const startTracedApp = (envOf: (port: number) => Record<string, string>) =>
  Effect.gen(function*() {
    const { spans, tracer } = makeRecordingTracer()
    const fake = yield* FakeTelegram.make()
    const env = { ...fake.env, DATABASE_URL: yield* freshDatabaseUrl, ...envOf(yield* freePort) }
    const app = yield* startApp(env).pipe(Effect.withTracer(tracer))
    return { app, fake, spans }
  })

describe("tracing", () => {
  it.live("an update from the webhook to the reply", () =>
    Effect.gen(function*() {
      const { app, fake, spans } = yield* startTracedApp((port) => ({
        PORT: String(port),
        PUBLIC_URL: `http://127.0.0.1:${port}`,
        TELEGRAM_WEBHOOK_SECRET: TEST_WEBHOOK_SECRET
      }))
      yield* fake.awaitCall("setWebhook", undefined, { timeoutMs: 10_000 })
      const chatId = 6001
      const before = fake.mark()
      const updateId = fake.pushUpdate(FakeTelegram.textMessage({ chatId, text: "/start" }))
      assert.strictEqual((yield* fake.awaitDelivery((d) => d.updateId === updateId)).status, 200)
      yield* fake.awaitCall("sendMessage", (c) => Number(c.params.chat_id) === chatId, { after: before })
      yield* awaitInboxIdle(app, updateId)

      // Intake: the HTTP request, the webhook handling it, the inbox storing the update.
      const webhook = spanOf(spans, "TelegramWebhook.handle", hasAttribute("update_id", updateId))
      assert.strictEqual(parentOf(webhook)?.attributes.get("http.route"), "/telegram/webhook")
      const stored = spanOf(spans, "Inbox.store", (s) => parentOf(s) === webhook)
      assert.strictEqual(stored.traceId, webhook.traceId)

      // Dispatch: the claim (by the INSERT itself, once the dispatcher runs, or a claim statement
      // before that) starts the handler run, which runs the chat flow, which replies.
      const run = spanOf(spans, "Dispatcher.handlerRun", hasAttribute("update_id", updateId))
      assert.strictEqual(run.attributes.get("chat"), String(chatId))
      assert.include(["Dispatcher.takeStored", "Dispatcher.claimAvailable"], parentOf(run)?.name)
      const flow = spanOf(spans, "ChatFlow.handle", (s) => parentOf(s) === run)
      const reply = spanOf(spans, "Telegram.sendMessage", (s) => parentOf(s) === flow)
      assert.strictEqual(reply.traceId, run.traceId)
      spanOf(spans, "Inbox.complete", (s) => parentOf(s) === run)
    }))

  it.live("a generation from queued to delivered", () =>
    Effect.gen(function*() {
      // Kie's tasks finish after one poll; it polls every 100 ms of real time.
      const kie = yield* FakeKie.scoped({ apiKey: TEST_KIE_KEY, defaultTask: { steps: ["generating", localResult()] } })
      const { app, fake, spans } = yield* startTracedApp(() => ({ KIE_BASE_URL: kie.url, KIE_POLL_INTERVAL_MS: "100" }))
      const chatId = 6002
      const inChat = (c: FakeTelegram.RecordedCall) => Number(c.params.chat_id) === chatId
      const say = (update: Record<string, unknown>) =>
        Effect.gen(function*() {
          const after = fake.mark()
          fake.pushUpdate(update)
          return yield* fake.awaitCall("sendMessage", inChat, { after, timeoutMs: 10_000 })
        })
      const welcome = yield* say(FakeTelegram.textMessage({ chatId, text: "/start" }))
      yield* say(
        FakeTelegram.callbackQuery({ chatId, data: "zimage:start", messageId: FakeTelegram.messageIdOf(welcome) })
      )
      const ratio = yield* say(FakeTelegram.textMessage({ chatId, text: "маяк в шторм" }))
      const before = fake.mark()
      const pressed = fake.pushUpdate(
        FakeTelegram.callbackQuery({ chatId, data: "zimage:ratio:1:1", messageId: FakeTelegram.messageIdOf(ratio) })
      )
      const photo = yield* fake.awaitCall("sendPhoto", inChat, { after: before, timeoutMs: 20_000 })
      // Once delivered, the engine removes the status message: the generation is done.
      yield* fake.awaitCall("deleteMessage", inChat, { after: photo.seq, timeoutMs: 20_000 })
      const [row] = yield* app.run(Effect.gen(function*() {
        const sql = yield* SqlClient
        return yield* sql<{ id: string; status: string }>`SELECT id::text AS id, status FROM generations`
      }))
      assert.strictEqual(row?.status, "delivered")
      const generationId = row!.id
      const ofGeneration = hasAttribute("generation_id", generationId)

      // Recorded by the chat flow, in the trace of the update that asked for it.
      const run = spanOf(spans, "Dispatcher.handlerRun", hasAttribute("update_id", pressed))
      const created = spanOf(spans, "Generations.create", ofGeneration)
      assert.isTrue(isUnder(run)(created), "Generations.create runs in the update's handler run")
      assert.strictEqual(parentOf(created)?.name, "ChatFlow.startGeneration")
      assert.isTrue(isUnder(spanOf(spans, "ChatFlow.handle", (s) => parentOf(s) === run))(created))

      // Submitted: createTask (and marking the row submitting) under Engine.submit.
      const submit = spanOf(spans, "Engine.submit", ofGeneration)
      const createTask = spanOf(spans, "Kie.createTask", (s) => parentOf(s) === submit)
      spanOf(spans, "Generations.markSubmitting", isUnder(createTask))

      // Polled until Kie reports the result; the poll that sees it starts the delivery (or, if the
      // sweep finds the succeeded row first, the sweep does: both are the engine's way in).
      const polls = spans.filter((s) => s.name === "Engine.poll" && ofGeneration(s))
      assert.isAtLeast(polls.length, 1, `Engine.poll spans for generation ${generationId}:\n${treeOf(spans)}`)
      for (const poll of polls) spanOf(spans, "Kie.recordInfo", (s) => parentOf(s) === poll)
      const deliver = spanOf(spans, "Engine.deliver", ofGeneration)
      const startedBy = parentOf(deliver)
      assert.isTrue(
        startedBy?.name === "Engine.sweep" || polls.includes(startedBy!),
        `Engine.deliver is started by a poll of this generation or by the sweep:\n${treeOf(spans)}`
      )

      // Delivered: the photo sent and the row marked, under Engine.deliver.
      spanOf(spans, "Telegram.sendPhoto", (s) => parentOf(s) === deliver)
      spanOf(spans, "Generations.markDelivered", (s) => parentOf(s) === deliver)
    }))
})
