/**
 * The chat flow end to end: the whole service in-process, real HTTP on
 * loopback, a real database, the fake Bot API (long polling and webhook
 * modes) and the fake Kie. Texts and callback data are the public contract.
 */
import { assert, describe, it } from "@effect/vitest"
import { PgClient } from "@effect/sql-pg"
import { Arbitrary, Effect, Option, Redacted, Schema } from "effect"
import { TestClock } from "effect/testing"
import { SqlClient } from "effect/sql/SqlClient"
import { type ChatSession, ChatSessions } from "../src/chat/ChatSessions.ts"
import { type ChatState, isValidState } from "../src/chat/ChatFlowLogic.ts"
import * as Database from "../src/database/Database.ts"
import { migrations } from "../src/Migrations.ts"
import { PROMPT_MAX_LENGTH, t } from "../src/texts/Messages.ts"
import { FakeKie, localResult } from "./fakes/FakeKie.ts"
import * as FakeTelegram from "./fakes/FakeTelegram.ts"
import { awaitInboxIdle, freePort, startApp, startAppScoped } from "./support/TestApp.ts"
import { TEST_KIE_KEY, TEST_WEBHOOK_SECRET } from "./support/TestConfig.ts"
import { freshDatabaseUrl } from "./support/TestDatabase.ts"

type Fake = FakeTelegram.FakeTelegramShape

/** Buttons of a recorded call's reply_markup as [text, callback_data] pairs. */
const buttons = (call: FakeTelegram.RecordedCall): Array<[string, string]> => {
  const markup = call.params.reply_markup as { inline_keyboard?: Array<Array<{ text: string; callback_data: string }>> }
  return (markup?.inline_keyboard ?? []).flat().map((b) => [b.text, b.callback_data])
}

/** Sends `update`, waits for the bot's next `method` call in that chat. */
const exchange = (fake: Fake, update: Record<string, unknown>, method: string, chatId: number) =>
  Effect.gen(function*() {
    const after = fake.mark()
    lastPushed.set(fake, fake.pushUpdate(update))
    return yield* fake.awaitCall(method, (c) => Number(c.params.chat_id) === chatId, { after, timeoutMs: 10_000 })
  })

const answeredWith = (fake: Fake, queryId: string) =>
  fake.awaitCall("answerCallbackQuery", (c) => c.params.callback_query_id === queryId, { timeoutMs: 10_000 })

/** /start → button → prompt → ratio keyboard: returns the ratio keyboard's message id. */
const upToRatio = (fake: Fake, chatId: number, prompt: string, languageCode = "ru") =>
  Effect.gen(function*() {
    const welcome = yield* exchange(
      fake,
      FakeTelegram.textMessage({ chatId, text: "/start", languageCode }),
      "sendMessage",
      chatId
    )
    const ask = yield* exchange(
      fake,
      FakeTelegram.callbackQuery({ chatId, data: "zimage:start", languageCode, messageId: messageIdOf(welcome) }),
      "sendMessage",
      chatId
    )
    const ratio = yield* exchange(
      fake,
      FakeTelegram.textMessage({ chatId, text: prompt, languageCode }),
      "sendMessage",
      chatId
    )
    return { welcome, ask, ratio, keyboardMessageId: messageIdOf(ratio) }
  })

/** The id of the update `exchange` last pushed to each fake. */
const lastPushed = new WeakMap<Fake, number>()

const messageIdOf = FakeTelegram.messageIdOf

const pressRatio = (fake: Fake, chatId: number, ratio: string, messageId: number, languageCode = "ru") =>
  Effect.gen(function*() {
    const id = `ratio-${chatId}-${messageId}-${ratio}`
    const status = yield* exchange(
      fake,
      FakeTelegram.callbackQuery({ chatId, data: `zimage:ratio:${ratio}`, messageId, id, languageCode }),
      "sendMessage",
      chatId
    )
    const answered = yield* answeredWith(fake, id)
    return { status, answered }
  })

const generationsOf = (app: { run: <A, E>(e: Effect.Effect<A, E, any>) => Effect.Effect<A, E> }, chatId: number) =>
  app.run(Effect.gen(function*() {
    const sql = yield* SqlClient
    return yield* sql<{ prompt: string; aspect_ratio: string; status: string; lang: string }>`
      SELECT prompt, aspect_ratio, status, lang FROM generations WHERE chat_id = ${chatId} ORDER BY id`
  }))

describe("chat flow, long polling", () => {
  it.live("walks the contract flow with the exact texts and callback data", () =>
    Effect.gen(function*() {
      const fake = yield* FakeTelegram.make()
      const app = yield* startApp({ ...fake.env, DATABASE_URL: yield* freshDatabaseUrl })
      const chatId = 5001

      const { welcome, ask, ratio, keyboardMessageId } = yield* upToRatio(fake, chatId, "рыжий кот в космическом шлеме")
      assert.strictEqual(welcome.params.text, t("ru").welcome)
      assert.deepStrictEqual(buttons(welcome), [["🖼 Создать картинку", "zimage:start"]])
      assert.strictEqual(ask.params.text, "Опишите картинку")
      assert.strictEqual(ratio.params.text, t("ru").chooseRatio)
      assert.deepStrictEqual(buttons(ratio), [
        ["1:1", "zimage:ratio:1:1"],
        ["16:9", "zimage:ratio:16:9"],
        ["9:16", "zimage:ratio:9:16"],
        ["4:3", "zimage:ratio:4:3"],
        ["3:4", "zimage:ratio:3:4"]
      ])

      const { status } = yield* pressRatio(fake, chatId, "16:9", keyboardMessageId)
      assert.isTrue(String(status.params.text).startsWith("⏳ Генерирую..."))
      yield* awaitInboxIdle(app, lastPushed.get(fake)!)
      const recorded = yield* generationsOf(app, chatId)
      assert.deepStrictEqual(recorded.map((g) => [g.prompt, g.aspect_ratio, g.lang]), [
        ["рыжий кот в космическом шлеме", "16:9", "ru"]
      ])
      // The ratio keyboard is taken away so it cannot start a second generation.
      yield* fake.awaitCall("editMessageReplyMarkup", (c) => Number(c.params.message_id) === keyboardMessageId)
      const session = yield* app.run(Effect.flatMap(Effect.service(ChatSessions), (s) => s.get(chatId, chatId)))
      assert.deepStrictEqual(Option.map(session, (s) => s.state._tag), Option.some("Idle"))
    }))

  it.live("speaks English to English-speaking users", () =>
    Effect.gen(function*() {
      const fake = yield* FakeTelegram.make()
      const app = yield* startApp({ ...fake.env, DATABASE_URL: yield* freshDatabaseUrl })
      const chatId = 5002
      const { welcome, ask, keyboardMessageId } = yield* upToRatio(fake, chatId, "a red fox", "en-GB")
      assert.strictEqual(welcome.params.text, t("en").welcome)
      assert.deepStrictEqual(buttons(welcome), [[t("en").createButton, "zimage:start"]])
      assert.strictEqual(ask.params.text, t("en").askPrompt)
      const { status } = yield* pressRatio(fake, chatId, "1:1", keyboardMessageId, "en-GB")
      assert.strictEqual(status.params.text, t("en").generating)
      assert.strictEqual((yield* generationsOf(app, chatId))[0]!.lang, "en")
    }))

  it.live("bad input gets a clear hint and changes nothing", () =>
    Effect.gen(function*() {
      const fake = yield* FakeTelegram.make()
      const app = yield* startApp({ ...fake.env, DATABASE_URL: yield* freshDatabaseUrl })
      const chatId = 5003
      yield* exchange(fake, FakeTelegram.textMessage({ chatId, text: "/start" }), "sendMessage", chatId)
      yield* exchange(fake, FakeTelegram.callbackQuery({ chatId, data: "zimage:start" }), "sendMessage", chatId)

      const tooLong = yield* exchange(
        fake,
        FakeTelegram.textMessage({ chatId, text: "я".repeat(PROMPT_MAX_LENGTH + 5) }),
        "sendMessage",
        chatId
      )
      assert.strictEqual(tooLong.params.text, t("ru").promptTooLong(PROMPT_MAX_LENGTH + 5))
      const blank = yield* exchange(fake, FakeTelegram.textMessage({ chatId, text: "  \n " }), "sendMessage", chatId)
      assert.strictEqual(blank.params.text, t("ru").promptEmpty)
      const sticker = FakeTelegram.textMessage({ chatId, text: "x" })
      const message = sticker.message as Record<string, unknown>
      delete message.text
      message.sticker = { file_id: "CAACAgIAAxkBAAE", width: 512, height: 512, is_animated: false }
      const notText = yield* exchange(fake, sticker, "sendMessage", chatId)
      assert.strictEqual(notText.params.text, t("ru").notText)

      // Still waiting for a prompt: a good one is accepted.
      const ratio = yield* exchange(fake, FakeTelegram.textMessage({ chatId, text: "закат" }), "sendMessage", chatId)
      assert.strictEqual(ratio.params.text, t("ru").chooseRatio)

      // An old keyboard, a tampered ratio, unknown data and generation ids beyond
      // PostgreSQL's bigint (which no query may see): "expired", nothing recorded.
      const pressed: Array<number> = []
      for (
        const [data, messageId] of [
          ["zimage:ratio:1:1", messageIdOf(ratio) - 1],
          ["zimage:ratio:5:4", messageIdOf(ratio)],
          ["zimage:something", messageIdOf(ratio)],
          ["zimage:again:99999999999999999999999", messageIdOf(ratio)],
          ["zimage:again:9223372036854775808", messageIdOf(ratio)],
          ["zimage:retry:9999999999999999999", messageIdOf(ratio)]
        ] as const
      ) {
        const id = `stale-${data}-${messageId}`
        pressed.push(fake.pushUpdate(FakeTelegram.callbackQuery({ chatId, data, messageId, id })))
        const answered = yield* answeredWith(fake, id)
        assert.strictEqual(answered.params.text, t("ru").expired)
      }
      assert.strictEqual(yield* awaitInboxIdle(app, pressed.at(-1)!), 0, "no update ended dead")
      const statuses = yield* app.run(Effect.gen(function*() {
        const sql = yield* SqlClient
        return yield* sql<{ status: string }>`SELECT status FROM telegram_updates WHERE update_id IN ${sql.in(pressed)}`
      }))
      assert.deepStrictEqual(statuses.map((r) => r.status), pressed.map(() => "done"))
      assert.lengthOf(yield* generationsOf(app, chatId), 0)
      const session = yield* app.run(Effect.flatMap(Effect.service(ChatSessions), (s) => s.get(chatId, chatId)))
      assert.deepStrictEqual(
        Option.map(session, (s) => s.state),
        Option.some({
          _tag: "WaitingAspectRatio" as const,
          prompt: "закат",
          keyboardMessageId: messageIdOf(ratio)
        })
      )

      // Someone who never pressed /start gets the welcome.
      const stranger = yield* exchange(
        fake,
        FakeTelegram.textMessage({ chatId: 5004, text: "привет" }),
        "sendMessage",
        5004
      )
      assert.strictEqual(stranger.params.text, t("ru").welcome)
    }))

  it.live("one generation in flight per user, and the daily limit, are told plainly", () =>
    Effect.gen(function*() {
      const fake = yield* FakeTelegram.make()
      const app = yield* startApp({ ...fake.env, DATABASE_URL: yield* freshDatabaseUrl, DAILY_GENERATION_LIMIT: "1" })
      const chatId = 5005
      const first = yield* upToRatio(fake, chatId, "первая")
      yield* pressRatio(fake, chatId, "1:1", first.keyboardMessageId)
      const ratio = yield* exchange(fake, FakeTelegram.textMessage({ chatId, text: "/start" }), "sendMessage", chatId)
      const ask = yield* exchange(
        fake,
        FakeTelegram.callbackQuery({ chatId, data: "zimage:start", messageId: messageIdOf(ratio) }),
        "sendMessage",
        chatId
      )
      assert.strictEqual(ask.params.text, "Опишите картинку")
      const keyboard = yield* exchange(
        fake,
        FakeTelegram.textMessage({ chatId, text: "вторая" }),
        "sendMessage",
        chatId
      )
      const { status } = yield* pressRatio(fake, chatId, "1:1", messageIdOf(keyboard))
      assert.strictEqual(status.params.text, t("ru").busy)
      assert.lengthOf(yield* generationsOf(app, chatId), 1)

      // The first one finishes; the daily limit (1) now stops the second.
      const generations = yield* generationsOf(app, chatId)
      // Still in flight (the engine may already be trying to send it to Kie, which is not there).
      assert.include(["queued", "submitting"], generations[0]!.status)
      yield* app.run(Effect.gen(function*() {
        const sql = yield* SqlClient
        yield* sql`UPDATE generations SET status = 'failed', fail_code = 'test' WHERE chat_id = ${chatId}`
        yield* sql`UPDATE generations SET status = 'delivered', kie_task_id = 'done-1' WHERE chat_id = ${chatId}`
      }))
      const again = yield* pressRatio(fake, chatId, "4:3", messageIdOf(keyboard))
      assert.strictEqual(again.status.params.text, t("ru").dailyLimit(1))
    }))

  // The whole service on the TestClock: the wait for retry_after is virtual.
  it.effect("honours Telegram's 429 retry_after", () =>
    Effect.gen(function*() {
      const fake = yield* FakeTelegram.make()
      yield* startApp({ ...fake.env, DATABASE_URL: yield* freshDatabaseUrl })
      fake.failNext("sendMessage", FakeTelegram.failure.rateLimited(1), 1)
      const chatId = 5006
      const start = fake.mark()
      fake.pushUpdate(FakeTelegram.textMessage({ chatId, text: "/start" }))
      const limited = yield* fake.awaitCall("sendMessage", (c) => Number(c.params.chat_id) === chatId, { after: start })
      // Virtual time stands still, so the retry can only come from moving it:
      // step it 100 ms at a time and count the steps until the retry arrives.
      const isRetry = (c: FakeTelegram.RecordedCall) => c.seq > limited.seq && Number(c.params.chat_id) === chatId
      let steps = 0
      while (fake.calls("sendMessage").filter(isRetry).length === 0 && steps < 30) {
        yield* TestClock.adjust("100 millis")
        steps++
        yield* fake.awaitCall("sendMessage", isRetry, { after: limited.seq, timeoutMs: 200 }).pipe(Effect.option)
      }
      assert.isAtLeast(steps, 10, "the retry waited retry_after (1 s) of virtual time")
      const retried = fake.calls("sendMessage").filter(isRetry)[0]!
      const calls = [limited, retried]
      assert.strictEqual(calls[0]!.response?.status, 429)
      assert.strictEqual(retried.params.text, t("ru").welcome)
    }))

  it.live("the conversation survives a restart of the service mid-flow", () =>
    Effect.gen(function*() {
      const fake = yield* FakeTelegram.make()
      const databaseUrl = yield* freshDatabaseUrl
      const chatId = 5007
      const first = yield* startAppScoped({ ...fake.env, DATABASE_URL: databaseUrl })
      const { keyboardMessageId } = yield* upToRatio(fake, chatId, "маяк в шторм")
      yield* first.stop
      const second = yield* startApp({ ...fake.env, DATABASE_URL: databaseUrl })
      const { status } = yield* pressRatio(fake, chatId, "9:16", keyboardMessageId)
      assert.strictEqual(status.params.text, t("ru").generating)
      assert.deepStrictEqual((yield* generationsOf(second, chatId)).map((g) => [g.prompt, g.aspect_ratio]), [[
        "маяк в шторм",
        "9:16"
      ]])
    }))
})

describe("chat flow, to the picture", () => {
  /** The app with a fake Kie whose tasks finish after one poll; polls every 100 ms of real time. */
  const withKie = Effect.gen(function*() {
    const fake = yield* FakeTelegram.make()
    const kie = yield* FakeKie.scoped({ apiKey: TEST_KIE_KEY, defaultTask: { steps: ["generating", localResult()] } })
    const app = yield* startApp({
      ...fake.env,
      DATABASE_URL: yield* freshDatabaseUrl,
      KIE_BASE_URL: kie.url,
      KIE_POLL_INTERVAL_MS: "100"
    })
    return { fake, kie, app }
  })

  const awaitFor = (fake: Fake, method: string, chatId: number, after: number) =>
    fake.awaitCall(method, (c) => Number(c.params.chat_id) === chatId, { after, timeoutMs: 20_000 })

  it.live("success: a photo captioned ✅ Готово! with more-variants buttons, plus the original file", () =>
    Effect.gen(function*() {
      const { app, fake, kie } = yield* withKie
      const chatId = 5201
      const { keyboardMessageId } = yield* upToRatio(fake, chatId, "кот-космонавт")
      const before = fake.mark()
      yield* pressRatio(fake, chatId, "1:1", keyboardMessageId)
      const photo = yield* awaitFor(fake, "sendPhoto", chatId, before)
      assert.include(String(photo.params.caption), "✅ Готово!")
      const [again, fresh] = buttons(photo)
      assert.strictEqual(again![0], t("ru").againButton)
      assert.match(again![1], /^zimage:again:\d+$/)
      assert.deepStrictEqual(fresh, [t("ru").newButton, "zimage:start"])
      assert.strictEqual(photo.files.length, 1, "the image is uploaded, not linked")
      const original = yield* awaitFor(fake, "sendDocument", chatId, before)
      assert.strictEqual(original.files.length, 1)
      assert.strictEqual(kie.counters.createTask, 1)
      const task = [...kie.tasks.values()][0]!
      assert.deepStrictEqual(task.body.input, { prompt: "кот-космонавт", aspect_ratio: "1:1", nsfw_checker: true })

      // "🔁 Ещё вариант": the same prompt and ratio once more.
      const next = fake.mark()
      fake.pushUpdate(
        FakeTelegram.callbackQuery({ chatId, data: again![1], messageId: messageIdOf(photo), id: "again-1" })
      )
      assert.strictEqual((yield* answeredWith(fake, "again-1")).params.text, undefined)
      const second = yield* awaitFor(fake, "sendPhoto", chatId, next)
      assert.include(String(second.params.caption), "✅ Готово!")
      // Once delivered, the engine removes the status message.
      yield* awaitFor(fake, "deleteMessage", chatId, second.seq)
      assert.deepStrictEqual((yield* generationsOf(app, chatId)).map((g) => [g.prompt, g.aspect_ratio, g.status]), [
        ["кот-космонавт", "1:1", "delivered"],
        ["кот-космонавт", "1:1", "delivered"]
      ])
    }))

  it.live("🔁 Ещё вариант works as soon as the photo is out, while the original file is still on its way", () =>
    Effect.gen(function*() {
      const { app, fake } = yield* withKie
      const chatId = 5203
      const { keyboardMessageId } = yield* upToRatio(fake, chatId, "маяк в тумане")
      let releaseOriginal = () => {}
      fake.failNext("sendDocument", FakeTelegram.failure.delayed(new Promise((resolve) => (releaseOriginal = resolve))))
      const before = fake.mark()
      yield* pressRatio(fake, chatId, "1:1", keyboardMessageId)
      const photo = yield* awaitFor(fake, "sendPhoto", chatId, before)
      yield* awaitFor(fake, "sendDocument", chatId, before)
      const [again] = buttons(photo)
      fake.pushUpdate(
        FakeTelegram.callbackQuery({ chatId, data: again![1], messageId: messageIdOf(photo), id: "again-early" })
      )
      assert.strictEqual((yield* answeredWith(fake, "again-early")).params.text, undefined, "not 'expired'")
      releaseOriginal()
      const second = yield* awaitFor(fake, "sendPhoto", chatId, photo.seq)
      assert.include(String(second.params.caption), "✅ Готово!")
      assert.strictEqual((yield* generationsOf(app, chatId)).length, 2)
    }))

  it.live("failure: the reason in plain words and 🔄 Попробовать снова, which retries the same prompt and ratio", () =>
    Effect.gen(function*() {
      const { app, fake, kie } = yield* withKie
      kie.scriptNextTasks({ steps: [{ fail: { code: "500", msg: "Internal Error" } }] })
      const chatId = 5202
      const { keyboardMessageId } = yield* upToRatio(fake, chatId, "дом у моря")
      const before = fake.mark()
      yield* pressRatio(fake, chatId, "4:3", keyboardMessageId)
      // The status message turns into the failure notice.
      const notice = yield* fake.awaitCall(
        "editMessageText",
        (c) => Number(c.params.chat_id) === chatId && buttons(c).length > 0,
        { after: before, timeoutMs: 20_000 }
      )
      assert.isTrue(String(notice.params.text).startsWith("❌ Не получилось создать картинку: "))
      const [[label, data]] = buttons(notice) as [[string, string]]
      assert.strictEqual(label, "🔄 Попробовать снова")
      assert.match(data, /^zimage:retry:\d+$/)

      const retry = fake.mark()
      fake.pushUpdate(
        FakeTelegram.callbackQuery({ chatId, data, messageId: Number(notice.params.message_id), id: "retry-1" })
      )
      const photo = yield* awaitFor(fake, "sendPhoto", chatId, retry)
      assert.include(String(photo.params.caption), "✅ Готово!")
      yield* awaitFor(fake, "deleteMessage", chatId, photo.seq)
      assert.deepStrictEqual((yield* generationsOf(app, chatId)).map((g) => [g.prompt, g.aspect_ratio, g.status]), [
        ["дом у моря", "4:3", "failed"],
        ["дом у моря", "4:3", "delivered"]
      ])
      // The used retry button is stale now (a double tap, an old client):
      // pressing it again only says "expired", and so does an unknown id.
      for (const [id, stale] of [["retry-again", data], ["retry-unknown", "zimage:retry:999999"]] as const) {
        fake.pushUpdate(
          FakeTelegram.callbackQuery({ chatId, data: stale, messageId: Number(notice.params.message_id), id })
        )
        assert.strictEqual((yield* answeredWith(fake, id)).params.text, t("ru").expired)
      }
      assert.lengthOf(yield* generationsOf(app, chatId), 2)
    }))
})

describe("chat flow, webhook mode", () => {
  it.live("Telegram delivers to /telegram/webhook and the flow answers", () =>
    Effect.gen(function*() {
      const fake = yield* FakeTelegram.make()
      const port = yield* freePort
      yield* startApp({
        ...fake.env,
        DATABASE_URL: yield* freshDatabaseUrl,
        PORT: String(port),
        PUBLIC_URL: `http://127.0.0.1:${port}`,
        TELEGRAM_WEBHOOK_SECRET: TEST_WEBHOOK_SECRET
      })
      yield* fake.awaitCall("setWebhook", undefined, { timeoutMs: 10_000 })
      assert.strictEqual(fake.webhook()?.url, `http://127.0.0.1:${port}/telegram/webhook`)
      const chatId = 5101
      const { keyboardMessageId } = yield* upToRatio(fake, chatId, "горы на рассвете")
      const { status } = yield* pressRatio(fake, chatId, "3:4", keyboardMessageId)
      assert.strictEqual(status.params.text, t("ru").generating)
      assert.isTrue(fake.deliveries().every((d) => d.status === 200))
      const commands = yield* fake.awaitCall("setMyCommands", (c) => c.params.language_code === "en")
      assert.deepStrictEqual(
        (commands.params.commands as Array<{ command: string }>).map((c) => c.command),
        ["start", "help", "cancel"]
      )
    }))
})

describe("chat flow, random updates", () => {
  const Event = Schema.Struct({
    kind: Schema.Literals([
      "start",
      "help",
      "cancel",
      "text",
      "long",
      "sticker",
      "press-start",
      "press-ratio",
      "press-old",
      "press-junk",
      "again"
    ]),
    n: Schema.Int.check(Schema.isBetween({ minimum: 0, maximum: 50 }))
  })

  const updateFor = (event: typeof Event.Type, chatId: number, lastMessageId: number): Record<string, unknown> => {
    switch (event.kind) {
      case "start":
      case "help":
      case "cancel":
        return FakeTelegram.textMessage({ chatId, text: `/${event.kind}` })
      case "text":
        return FakeTelegram.textMessage({ chatId, text: `prompt ${event.n}` })
      case "long":
        return FakeTelegram.textMessage({ chatId, text: "x".repeat(PROMPT_MAX_LENGTH + 1 + event.n) })
      case "sticker": {
        const update = FakeTelegram.textMessage({ chatId, text: "x" })
        const message: Record<string, unknown> = {
          ...(update.message as Record<string, unknown>),
          sticker: { file_id: "s" }
        }
        delete message.text
        return { message }
      }
      default:
        return FakeTelegram.callbackQuery({
          chatId,
          messageId: event.kind === "press-old" ? Math.max(1, lastMessageId - 1 - (event.n % 3)) : lastMessageId,
          data: event.kind === "press-start"
            ? "zimage:start"
            : event.kind === "press-ratio" || event.kind === "press-old"
            ? [
              "zimage:ratio:1:1",
              "zimage:ratio:16:9",
              "zimage:ratio:9:16",
              "zimage:ratio:4:3",
              "zimage:ratio:3:4"
            ][event.n % 5]!
            : event.kind === "again"
            ? `zimage:again:${event.n}`
            : `junk-${event.n}`
        })
    }
  }

  it.live("random sequences of updates to one chat never crash a worker and always leave a valid state", () =>
    Effect.gen(function*() {
      const fake = yield* FakeTelegram.make()
      const app = yield* startApp({
        ...fake.env,
        DATABASE_URL: yield* freshDatabaseUrl,
        MAX_ACTIVE_GENERATIONS_PER_USER: "100"
      })
      let nextChat = 7000
      const result = yield* Arbitrary.checkEffect(
        Arbitrary.array(Arbitrary.schema(Event), { minLength: 6, maxLength: 30 }),
        (events) =>
          Effect.gen(function*() {
            // A fresh chat per evaluation, so evaluations (and shrinking) are independent.
            const chatId = nextChat++
            const queries: Array<string> = []
            let lastId = 0
            for (const event of events) {
              const messages = fake.messages(chatId)
              const update = updateFor(
                event,
                chatId,
                messages.length > 0 ? messages[messages.length - 1]!.messageId : 1
              )
              const query = (update.callback_query as { id?: string } | undefined)?.id
              if (query !== undefined) queries.push(query)
              lastId = fake.pushUpdate(update)
            }
            const dead = yield* awaitInboxIdle(app, lastId)
            const session = yield* app.run(Effect.flatMap(Effect.service(ChatSessions), (s) => s.get(chatId, chatId)))
            const answered = fake.calls("answerCallbackQuery")
              .map((c) => String(c.params.callback_query_id))
              .filter((id) => queries.includes(id))
            return dead === 0 &&
              Option.match(session, { onNone: () => true, onSome: (s) => isValidState(s.state) }) &&
              answered.length === queries.length && new Set(answered).size === queries.length
          }),
        { runs: 40 }
      )
      const failure = Arbitrary.formatCheckFailure(result)
      assert.isUndefined(failure, failure)
    }))
})

describe("chat flow, groups", () => {
  const groupId = -1009001
  const [A, B] = [6101, 6102]

  /** `params.reply_parameters.message_id` of a recorded send. */
  const repliesTo = (call: FakeTelegram.RecordedCall) =>
    (call.params.reply_parameters as { message_id?: number } | undefined)?.message_id

  /**
   * Pushes `update` (or runs `push`, which pushes one) and waits until the bot
   * handled it; returns the sendMessage calls it made in the group.
   */
  const handled = (
    app: Parameters<typeof awaitInboxIdle>[0],
    fake: Fake,
    update: Record<string, unknown> | (() => number)
  ) =>
    Effect.gen(function*() {
      const after = fake.mark()
      const id = typeof update === "function" ? update() : fake.pushUpdate(update)
      assert.strictEqual(yield* awaitInboxIdle(app, id), 0)
      return fake.calls("sendMessage").filter((c) => c.seq > after && Number(c.params.chat_id) === groupId)
    })

  const sessionOf = (app: Parameters<typeof awaitInboxIdle>[0], userId: number) =>
    app.run(Effect.flatMap(Effect.service(ChatSessions), (s) => s.get(groupId, userId))).pipe(
      Effect.map(Option.map((s) => s.state))
    )

  it.live("members have conversations of their own, and a button acts only for whom it was shown to", () =>
    Effect.gen(function*() {
      const fake = yield* FakeTelegram.make()
      const app = yield* startApp({ ...fake.env, DATABASE_URL: yield* freshDatabaseUrl })
      const say = (userId: number, text: string, messageId: number, replyTo?: number) =>
        FakeTelegram.textMessage({
          chatId: groupId,
          userId,
          text,
          messageId,
          ...(replyTo === undefined ? {} : { replyTo: { messageId: replyTo } })
        })
      const press = (userId: number, messageId: number, data: string, id: string) => () =>
        fake.pressButton({ chatId: groupId, userId, messageId, data, id })

      const [welcomeA] = yield* handled(app, fake, say(A, "/start", 1001))
      const [welcomeB] = yield* handled(app, fake, say(B, "/start", 1002))
      assert.strictEqual(repliesTo(welcomeA!), 1001)
      assert.strictEqual(repliesTo(welcomeB!), 1002)

      // B presses A's welcome button: told so, and nothing else happens.
      assert.lengthOf(yield* handled(app, fake, press(B, messageIdOf(welcomeA!), "zimage:start", "b-on-a")), 0)
      assert.strictEqual((yield* answeredWith(fake, "b-on-a")).params.text, t("ru").notYourButton)

      // Each asks for a prompt: a forced reply from that member alone, quoting their /start.
      const [askA] = yield* handled(app, fake, press(A, messageIdOf(welcomeA!), "zimage:start", "a-start"))
      const [askB] = yield* handled(app, fake, press(B, messageIdOf(welcomeB!), "zimage:start", "b-start"))
      for (const [ask, quoted] of [[askA!, 1001], [askB!, 1002]] as const) {
        assert.strictEqual(ask.params.text, t("ru").askPrompt)
        assert.deepStrictEqual(ask.params.reply_markup, { force_reply: true, selective: true })
        assert.deepStrictEqual(ask.params.reply_parameters, { message_id: quoted, allow_sending_without_reply: true })
      }

      // Chatter that is no reply to the bot is not a prompt.
      assert.lengthOf(yield* handled(app, fake, say(A, "кто-нибудь видел мой зонт?", 1003)), 0)
      const [ratioA] = yield* handled(app, fake, say(A, "рыжий кот", 1004, messageIdOf(askA!)))
      const [ratioB] = yield* handled(app, fake, say(B, "серый пёс", 1005, messageIdOf(askB!)))
      assert.strictEqual(ratioA!.params.text, t("ru").chooseRatio)
      assert.strictEqual(repliesTo(ratioA!), 1004)
      assert.strictEqual(repliesTo(ratioB!), 1005)
      assert.deepStrictEqual(
        yield* sessionOf(app, A),
        Option.some<ChatState>({
          _tag: "WaitingAspectRatio",
          prompt: "рыжий кот",
          keyboardMessageId: messageIdOf(ratioA!)
        })
      )
      assert.deepStrictEqual(Option.map(yield* sessionOf(app, B), (s) => s._tag), Option.some("WaitingAspectRatio"))

      // B presses A's ratio keyboard: "not your button", and no generation starts.
      assert.lengthOf(yield* handled(app, fake, press(B, messageIdOf(ratioA!), "zimage:ratio:1:1", "b-on-a-ratio")), 0)
      assert.strictEqual((yield* answeredWith(fake, "b-on-a-ratio")).params.text, t("ru").notYourButton)
      assert.lengthOf(yield* generationsOf(app, groupId), 0)

      // A's own press starts A's generation; B still waits for a ratio.
      const [status] = yield* handled(app, fake, press(A, messageIdOf(ratioA!), "zimage:ratio:16:9", "a-ratio"))
      assert.strictEqual(status!.params.text, t("ru").generating)
      assert.deepStrictEqual((yield* generationsOf(app, groupId)).map((g) => [g.prompt, g.aspect_ratio]), [[
        "рыжий кот",
        "16:9"
      ]])
      assert.deepStrictEqual(Option.map(yield* sessionOf(app, A), (s) => s._tag), Option.some("Idle"))
      assert.deepStrictEqual(Option.map(yield* sessionOf(app, B), (s) => s._tag), Option.some("WaitingAspectRatio"))
    }))

  it.live("a command for another bot gets no answer; one for this bot (any case) does", () =>
    Effect.gen(function*() {
      const fake = yield* FakeTelegram.make()
      const app = yield* startApp({ ...fake.env, DATABASE_URL: yield* freshDatabaseUrl })
      const command = (text: string, messageId: number) =>
        FakeTelegram.textMessage({ chatId: groupId, userId: A, text, messageId })
      // Telegram failing getMe only delays the answer (the update is retried), it never guesses.
      fake.failNext("getMe", FakeTelegram.failure.serverError())
      assert.lengthOf(yield* handled(app, fake, command("/start@other_bot", 2001)), 0)
      const asked = fake.calls("getMe").length
      assert.isAtLeast(asked, 2)
      assert.lengthOf(yield* handled(app, fake, command("/help@other_bot", 2002)), 0)
      const [welcome] = yield* handled(app, fake, command(`/start@${FakeTelegram.fakeBot.username}`, 2003))
      assert.strictEqual(welcome!.params.text, t("ru").welcome)
      const [help] = yield* handled(app, fake, command("/help@Fake_Bot", 2004))
      assert.strictEqual(help!.params.text, t("ru").help)
      const [plain] = yield* handled(app, fake, command("/help", 2005))
      assert.strictEqual(plain!.params.text, t("ru").help)
      assert.lengthOf(fake.calls("getMe"), asked, "a getMe answer is remembered")
    }))

  it.live("a forum topic is answered in that topic, the picture included", () =>
    Effect.gen(function*() {
      const fake = yield* FakeTelegram.make()
      const kie = yield* FakeKie.scoped({ apiKey: TEST_KIE_KEY, defaultTask: { steps: ["generating", localResult()] } })
      const app = yield* startApp({
        ...fake.env,
        DATABASE_URL: yield* freshDatabaseUrl,
        KIE_BASE_URL: kie.url,
        KIE_POLL_INTERVAL_MS: "100"
      })
      const topic = 77
      const [welcome] = yield* handled(
        app,
        fake,
        FakeTelegram.textMessage({ chatId: groupId, userId: A, text: "/start", messageId: 3001, threadId: topic })
      )
      const [ask] = yield* handled(
        app,
        fake,
        () => fake.pressButton({ chatId: groupId, userId: A, messageId: messageIdOf(welcome!), data: "zimage:start" })
      )
      const [ratio] = yield* handled(
        app,
        fake,
        FakeTelegram.textMessage({
          chatId: groupId,
          userId: A,
          text: "маяк",
          messageId: 3002,
          threadId: topic,
          replyTo: { messageId: messageIdOf(ask!) }
        })
      )
      const before = fake.mark()
      const [status] = yield* handled(
        app,
        fake,
        () => fake.pressButton({ chatId: groupId, userId: A, messageId: messageIdOf(ratio!), data: "zimage:ratio:1:1" })
      )
      for (const sent of [welcome!, ask!, ratio!, status!]) assert.strictEqual(sent.params.message_thread_id, topic)
      const inGroup = (c: FakeTelegram.RecordedCall) => Number(c.params.chat_id) === groupId
      const photo = yield* fake.awaitCall("sendPhoto", inGroup, { after: before, timeoutMs: 20_000 })
      assert.include(String(photo.params.caption), "✅ Готово!")
      assert.strictEqual(photo.params.message_thread_id, topic)
      const original = yield* fake.awaitCall("sendDocument", inGroup, { after: before, timeoutMs: 20_000 })
      assert.strictEqual(original.params.message_thread_id, topic)
      assert.strictEqual(fake.messages(groupId).find((m) => m.kind === "photo")?.threadId, topic)

      // The photo answers no message (Telegram shows it under the topic's creation message, by
      // member 999): its buttons are still its owner's, and only theirs.
      const [again] = buttons(photo)
      const pressAgain = (userId: number, id: string) => () =>
        fake.pressButton({ chatId: groupId, userId, messageId: messageIdOf(photo), data: again![1], id })
      yield* handled(app, fake, pressAgain(B, "b-again"))
      assert.strictEqual((yield* answeredWith(fake, "b-again")).params.text, t("ru").notYourButton)
      const [secondStatus] = yield* handled(app, fake, pressAgain(A, "a-again"))
      assert.isUndefined((yield* answeredWith(fake, "a-again")).params.text)
      assert.strictEqual(secondStatus!.params.message_thread_id, topic)
      assert.lengthOf(yield* generationsOf(app, groupId), 2)
    }))

  it.live("private chats stay as they were: no quoting, no forced reply, no topic", () =>
    Effect.gen(function*() {
      const fake = yield* FakeTelegram.make()
      yield* startApp({ ...fake.env, DATABASE_URL: yield* freshDatabaseUrl })
      const { welcome, ask, ratio } = yield* upToRatio(fake, 6201, "кот")
      for (const sent of [welcome, ask, ratio]) {
        assert.isUndefined(sent.params.reply_parameters)
        assert.isUndefined(sent.params.message_thread_id)
      }
      assert.isUndefined(ask.params.reply_markup)
      assert.lengthOf(fake.calls("getMe"), 0)
    }))
})

describe("chat sessions, migration 0009", () => {
  it.live("re-keys chat_sessions by (chat, user) and keeps the rows that were there", () =>
    Effect.gen(function*() {
      const url = yield* freshDatabaseUrl
      const before = Object.fromEntries(Object.entries(migrations).filter(([name]) => name < "0009"))
      yield* Effect.gen(function*() {
        const sql = yield* SqlClient
        yield* Database.migrate(before)
        yield* sql`INSERT INTO chat_sessions (chat_id, user_id, state, prompt, keyboard_message_id, lang, last_update_id, updated_at)
          VALUES (501, 501, 'waiting_aspect_ratio', 'кот', 7, 'en', 40, now()),
                 (502, NULL, 'waiting_prompt', NULL, NULL, 'ru', 41, now()),
                 (-900, 503, 'waiting_prompt', NULL, NULL, 'ru', 42, now())`
        yield* Database.migrate(migrations)
        const sessions = yield* ChatSessions
        assert.deepStrictEqual(
          Option.getOrUndefined(yield* sessions.get(501, 501)),
          {
            state: { _tag: "WaitingAspectRatio", prompt: "кот", keyboardMessageId: 7 },
            lang: "en",
            lastUpdateId: 40,
            model: null
          }
        )
        assert.strictEqual(Option.getOrUndefined(yield* sessions.get(502, 502))?.state._tag, "WaitingPrompt")
        assert.strictEqual(Option.getOrUndefined(yield* sessions.get(-900, 503))?.state._tag, "WaitingPrompt")
        // Another member of that group starts a conversation of their own beside it.
        yield* sessions.save(-900, 504, { state: { _tag: "Idle" }, lang: "ru", lastUpdateId: 43 })
        assert.strictEqual(Option.getOrUndefined(yield* sessions.get(-900, 503))?.state._tag, "WaitingPrompt")
        const columns = yield* sql<{ column_name: string }>`
          SELECT column_name FROM information_schema.columns
          WHERE table_name = 'generations' AND column_name = 'message_thread_id'`
        assert.lengthOf(columns, 1)
      }).pipe(
        Effect.provide(ChatSessions.layer),
        Effect.provide(PgClient.layer({ url: Redacted.make(url), maxConnections: 2 }))
      )
    }))

  it.live("concurrent reads share a statement and each gets its own (chat, user) session, ids of any size", () =>
    Effect.gen(function*() {
      const url = yield* freshDatabaseUrl
      yield* Effect.gen(function*() {
        yield* Database.migrate(migrations)
        const sessions = yield* ChatSessions
        // Ids that fit in 32 bits beside ones that do not, and a group's negative id, in one read.
        const group = -1_001_234_567_890
        const bigUser = 7_000_000_001
        const saved = (tag: "Idle" | "WaitingPrompt", lastUpdateId: number): ChatSession => ({
          state: { _tag: tag },
          lang: "ru",
          lastUpdateId
        })
        yield* sessions.saveMany([
          { chatId: group, userId: bigUser, session: saved("WaitingPrompt", 1) },
          { chatId: bigUser, userId: bigUser, session: saved("Idle", 2) },
          { chatId: 601, userId: 601, session: saved("WaitingPrompt", 3) },
          // In the read's chats and users, but not a pair it asks for.
          { chatId: bigUser, userId: 601, session: saved("WaitingPrompt", 4) }
        ])
        const asked: ReadonlyArray<readonly [number, number]> = [
          [group, bigUser],
          [bigUser, bigUser],
          [601, 601],
          [group, 601],
          [601, bigUser],
          [group, bigUser]
        ]
        const read = yield* Effect.forEach(asked, ([chatId, userId]) => sessions.get(chatId, userId), {
          concurrency: "unbounded"
        })
        assert.deepStrictEqual(
          read.map((session) => Option.map(session, (found) => [found.state._tag, found.lastUpdateId])),
          [
            Option.some(["WaitingPrompt", 1]),
            Option.some(["Idle", 2]),
            Option.some(["WaitingPrompt", 3]),
            Option.none(),
            Option.none(),
            Option.some(["WaitingPrompt", 1])
          ]
        )
      }).pipe(
        Effect.provide(ChatSessions.layer),
        Effect.provide(PgClient.layer({ url: Redacted.make(url), maxConnections: 2 }))
      )
    }))
})
