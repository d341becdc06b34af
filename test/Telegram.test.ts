import { assert, describe, it, layer } from "@effect/vitest"
import { Cause, Duration, Effect, Exit, Fiber, Layer, Option, Redacted, Schema } from "effect"
import { SqlClient } from "effect/sql/SqlClient"
import { TestClock } from "effect/testing"
import { Api, InputFile } from "grammy"
import * as BlockedChats from "../src/telegram/BlockedChats.ts"
import { makeCall, type RawApi } from "../src/telegram/BotApiCall.ts"
import * as BotApiTransport from "../src/telegram/BotApiTransport.ts"
import { makeSendGate } from "../src/telegram/SendGate.ts"
import { Telegram, type TelegramError } from "../src/telegram/Telegram.ts"
import * as FakeTelegram from "./fakes/FakeTelegram.ts"
import { makeLogCapture } from "./support/LogCapture.ts"
import { TEST_BOT_TOKEN, TestConfigLive } from "./support/TestConfig.ts"
import { TestDatabaseLive } from "./support/TestDatabase.ts"

const TOKEN_SECRET = TEST_BOT_TOKEN.split(":")[1]!

const TelegramLive = Layer.unwrap(Effect.gen(function*() {
  const fake = yield* FakeTelegram.FakeTelegram
  return Telegram.layer.pipe(Layer.provideMerge(TestDatabaseLive), Layer.provideMerge(TestConfigLive(fake.env)))
})).pipe(Layer.provideMerge(FakeTelegram.FakeTelegram.layer()))

const getMe = Effect.gen(function*() {
  const telegram = yield* Telegram
  return yield* telegram.getMe
})

const failureOf = <A>(effect: Effect.Effect<A, TelegramError>) => Effect.flip(effect)

/** No error message, description or reason may ever carry the token. */
const assertNoToken = (error: TelegramError) => {
  assert.notInclude(JSON.stringify(error), TOKEN_SECRET)
  assert.notInclude(error.message, TOKEN_SECRET)
  assert.notInclude(String(error), TOKEN_SECRET)
}

let nextChat = 1000
const freshChat = () => ++nextChat

layer(TelegramLive, { timeout: "60 seconds" })("Telegram", (it) => {
  it.effect("every method round-trips through grammY to the Bot API, with typed results", () =>
    Effect.gen(function*() {
      const telegram = yield* Telegram
      const fake = yield* FakeTelegram.FakeTelegram
      const chatId = freshChat()
      const me = yield* telegram.getMe
      assert.strictEqual(me.username, "fake_bot")
      const first = yield* telegram.sendMessage({
        chat_id: chatId,
        text: "hello",
        reply_markup: { inline_keyboard: [[{ text: "go", callback_data: "zimage:start" }]] }
      })
      const second = yield* telegram.sendMessage({ chat_id: chatId, text: "again" })
      assert.strictEqual(first.message_id, 1)
      assert.strictEqual(second.message_id, 2)
      assert.strictEqual(first.chat.id, chatId)
      const sent = yield* fake.awaitCall("sendMessage", (c) => c.params.text === "hello")
      assert.strictEqual(sent.transport, "json")
      assert.deepStrictEqual(sent.params.reply_markup, {
        inline_keyboard: [[{ text: "go", callback_data: "zimage:start" }]]
      })
      yield* telegram.editMessageText({ chat_id: chatId, message_id: 1, text: "edited" })
      yield* telegram.editMessageReplyMarkup({ chat_id: chatId, message_id: 1, reply_markup: { inline_keyboard: [] } })
      assert.strictEqual(fake.messages(chatId).find((m) => m.messageId === 1)?.text, "edited")
      yield* telegram.answerCallbackQuery({ callback_query_id: "cbq-x", text: "ok" })
      yield* telegram.sendChatAction({ chat_id: chatId, action: "upload_photo" })
      yield* telegram.deleteMessage({ chat_id: chatId, message_id: 2 })
      assert.deepStrictEqual(fake.messages(chatId).map((m) => m.messageId), [1])
      yield* telegram.setMyCommands({ commands: [{ command: "start", description: "Start" }] })
      assert.deepStrictEqual(fake.commands(), [{ command: "start", description: "Start" }])
      assert.include(fake.answeredCallbackQueries(), "cbq-x")
    }))

  it.effect("sendPhoto and sendDocument upload files as multipart", () =>
    Effect.gen(function*() {
      const telegram = yield* Telegram
      const fake = yield* FakeTelegram.FakeTelegram
      const chatId = freshChat()
      const bytes = new Uint8Array(150_000).fill(7)
      const photo = yield* telegram.sendPhoto({
        chat_id: chatId,
        photo: new InputFile(bytes, "image.png"),
        caption: "✅ Готово!",
        reply_markup: { inline_keyboard: [[{ text: "again", callback_data: "zimage:start" }]] }
      })
      assert.strictEqual(photo.photo[0]!.file_size, 150_000)
      const call = yield* fake.awaitCall("sendPhoto")
      assert.strictEqual(call.transport, "multipart")
      assert.strictEqual(call.params.chat_id, chatId)
      assert.strictEqual(call.params.caption, "✅ Готово!")
      assert.deepStrictEqual(call.params.reply_markup, {
        inline_keyboard: [[{ text: "again", callback_data: "zimage:start" }]]
      })
      assert.deepInclude(call.files[0]!, { filename: "image.png", size: 150_000 })
      const document = yield* telegram.sendDocument({ chat_id: chatId, document: new InputFile(bytes, "original.png") })
      assert.strictEqual(document.document.file_name, "original.png")
      const byUrl = yield* telegram.sendPhoto({ chat_id: chatId, photo: "https://example.com/a.png" })
      assert.isAbove(byUrl.message_id, document.message_id)
      assert.strictEqual(
        (yield* fake.awaitCall("sendPhoto", (c) => c.params.photo === "https://example.com/a.png")).transport,
        "json"
      )
    }))

  it.effect("429: waits retry_after on the clock, then succeeds", () =>
    Effect.gen(function*() {
      const telegram = yield* Telegram
      const fake = yield* FakeTelegram.FakeTelegram
      const logs = makeLogCapture()
      const chatId = freshChat()
      fake.failNext("sendMessage", FakeTelegram.failure.rateLimited(5), 2)
      const before = fake.mark()
      const fiber = yield* telegram.sendMessage({ chat_id: chatId, text: "after 429" }).pipe(
        Effect.provide(logs.layer),
        Effect.forkChild
      )
      yield* logs.awaitLine((l) =>
        l.message.includes(`429 on sendMessage: chat ${chatId} paused for 5 s; waiting 5 s (wait 1 of 3)`)
      )
      assert.lengthOf(fake.calls("sendMessage").filter((c) => c.seq > before), 1)
      yield* TestClock.adjust("4 seconds")
      assert.lengthOf(fake.calls("sendMessage").filter((c) => c.seq > before), 1, "not before retry_after")
      yield* TestClock.adjust("1 second")
      yield* logs.awaitLine((l) => l.message.includes("(wait 2 of 3)"))
      yield* TestClock.adjust("5 seconds")
      const message = yield* Fiber.join(fiber)
      assert.strictEqual(message.text, "after 429")
      assert.lengthOf(fake.calls("sendMessage").filter((c) => c.seq > before), 3)
    }))

  it.effect("429 more often than the policy allows: TelegramRateLimited after 3 waits", () =>
    Effect.gen(function*() {
      const telegram = yield* Telegram
      const fake = yield* FakeTelegram.FakeTelegram
      const logs = makeLogCapture()
      fake.failNext("sendMessage", FakeTelegram.failure.rateLimited(1), 4)
      const before = fake.mark()
      const fiber = yield* failureOf(telegram.sendMessage({ chat_id: freshChat(), text: "x" })).pipe(
        Effect.provide(logs.layer),
        Effect.forkChild
      )
      for (const n of [1, 2, 3]) {
        yield* logs.awaitLine((l) => l.message.includes(`(wait ${n} of 3)`))
        yield* TestClock.adjust("1 second")
      }
      const error = yield* Fiber.join(fiber)
      assert.strictEqual(error._tag, "TelegramRateLimited")
      assert.lengthOf(fake.calls("sendMessage").filter((c) => c.seq > before), 4)
    }))

  it.effect("a 429 asking for more than the longest allowed wait fails at once", () =>
    Effect.gen(function*() {
      const telegram = yield* Telegram
      const fake = yield* FakeTelegram.FakeTelegram
      const chatId = freshChat()
      fake.failNext("sendMessage", FakeTelegram.failure.rateLimited(600))
      const before = fake.mark()
      const error = yield* failureOf(telegram.sendMessage({ chat_id: chatId, text: "x" }))
      assert.strictEqual(error._tag, "TelegramRateLimited")
      assert.strictEqual((error as { retryAfterSeconds: number }).retryAfterSeconds, 600)
      assert.lengthOf(fake.calls("sendMessage").filter((c) => c.seq > before), 1)
      // The chat stays paused: the next call fails without a request; another chat is sent to at once.
      const again = yield* failureOf(telegram.sendMessage({ chat_id: chatId, text: "x" }))
      assert.strictEqual(again._tag, "TelegramRateLimited")
      assert.isAtMost(Math.abs((again as { retryAfterSeconds: number }).retryAfterSeconds - 600), 1)
      assert.lengthOf(fake.calls("sendMessage").filter((c) => c.seq > before), 1)
      yield* telegram.sendMessage({ chat_id: freshChat(), text: "other chat" })
      assert.lengthOf(fake.calls("sendMessage").filter((c) => c.seq > before), 2)
    }))

  it.effect("403 blocked: recorded in PostgreSQL, later sends short-circuit, an update from the chat clears it", () =>
    Effect.gen(function*() {
      const telegram = yield* Telegram
      const fake = yield* FakeTelegram.FakeTelegram
      const sql = yield* SqlClient
      const chatId = freshChat()
      fake.blockChat(chatId)
      const first = yield* failureOf(telegram.sendMessage({ chat_id: chatId, text: "hi" }))
      assert.strictEqual(first._tag, "TelegramChatBlocked")
      assert.include(first.message, "bot was blocked by the user")
      const [row] = yield* sql<{ blocked_at: Date | null; blocked_reason: string }>`
        SELECT blocked_at, blocked_reason FROM telegram_chats WHERE chat_id = ${chatId}`
      assert.isNotNull(row!.blocked_at)
      assert.include(row!.blocked_reason, "blocked by the user")
      assert.isTrue(yield* telegram.isBlocked(chatId))

      const before = fake.mark()
      for (const send of [
        telegram.sendMessage({ chat_id: chatId, text: "again" }),
        telegram.sendChatAction({ chat_id: chatId, action: "typing" }),
        telegram.editMessageText({ chat_id: chatId, message_id: 1, text: "x" })
      ]) {
        const error = yield* failureOf(send)
        assert.strictEqual(error._tag, "TelegramChatBlocked")
      }
      assert.strictEqual(fake.mark(), before, "no call reached the Bot API")

      fake.unblockChat(chatId)
      yield* telegram.markUnblocked([chatId, chatId])
      assert.isFalse(yield* telegram.isBlocked(chatId))
      const message = yield* telegram.sendMessage({ chat_id: chatId, text: "welcome back" })
      assert.strictEqual(message.text, "welcome back")
    }))

  it.effect("400 chat not found also marks the chat; other 400s are TelegramBadRequest", () =>
    Effect.gen(function*() {
      const telegram = yield* Telegram
      const fake = yield* FakeTelegram.FakeTelegram
      const chatId = freshChat()
      fake.failNext("sendMessage", FakeTelegram.failure.error(400, "Bad Request: chat not found"))
      assert.strictEqual(
        (yield* failureOf(telegram.sendMessage({ chat_id: chatId, text: "x" })))._tag,
        "TelegramChatBlocked"
      )
      assert.isTrue(yield* telegram.isBlocked(chatId))
      const other = freshChat()
      const empty = yield* failureOf(telegram.sendMessage({ chat_id: other, text: " " }))
      assert.strictEqual(empty._tag, "TelegramBadRequest")
      assert.strictEqual((empty as { description: string }).description, "Bad Request: message text is empty")
      assert.isFalse(yield* telegram.isBlocked(other))
    }))

  it.effect("\"message is not modified\" on edits is success; a missing message is TelegramBadRequest", () =>
    Effect.gen(function*() {
      const telegram = yield* Telegram
      const fake = yield* FakeTelegram.FakeTelegram
      const chatId = freshChat()
      const sent = yield* telegram.sendMessage({ chat_id: chatId, text: "⏳ Генерирую..." })
      const before = fake.mark()
      yield* telegram.editMessageText({ chat_id: chatId, message_id: sent.message_id, text: "⏳ Генерирую..." })
      yield* telegram.editMessageReplyMarkup({ chat_id: chatId, message_id: sent.message_id })
      const answers = fake.calls().filter((c) => c.seq > before).map((c) => c.response?.status)
      assert.deepStrictEqual(answers, [400, 400], "Telegram said 'not modified' twice")
      const missing = yield* failureOf(telegram.editMessageText({ chat_id: chatId, message_id: 999, text: "x" }))
      assert.strictEqual(missing._tag, "TelegramBadRequest")
      assert.include(missing.message, "message to edit not found")
    }))

  it.effect("409, 5xx, unknown method answers and network failures are typed and never carry the token", () =>
    Effect.gen(function*() {
      const telegram = yield* Telegram
      const fake = yield* FakeTelegram.FakeTelegram
      fake.setWebhookDirectly("https://elsewhere.example.com/hook")
      const conflict = yield* failureOf(telegram.getUpdates({ timeout: 0 }))
      assert.strictEqual(conflict._tag, "TelegramConflict")
      assert.include(conflict.message, "webhook is active")
      yield* telegram.deleteWebhook()

      fake.failNext("getMe", FakeTelegram.failure.serverError())
      const server = yield* failureOf(telegram.getMe)
      assert.strictEqual(server._tag, "TelegramServerError")

      fake.failNext("getMe", FakeTelegram.failure.error(404, "Not Found"))
      assert.strictEqual((yield* failureOf(telegram.getMe))._tag, "TelegramApiError")

      fake.failNext("getMe", FakeTelegram.failure.disconnect())
      const dropped = yield* failureOf(telegram.getMe)
      assert.strictEqual(dropped._tag, "TelegramNetworkError")

      fake.failNext("getMe", FakeTelegram.failure.notJson())
      const html = yield* failureOf(telegram.getMe)
      assert.strictEqual(html._tag, "TelegramNetworkError")
      assert.include(html.message, "not Bot API JSON")

      for (const error of [conflict, server, dropped, html]) assertNoToken(error)
    }))

  it.effect("a result without the fields the bot relies on is TelegramNetworkError; other fields are kept", () =>
    Effect.gen(function*() {
      const telegram = yield* Telegram
      const fake = yield* FakeTelegram.FakeTelegram
      const chat_id = freshChat()
      const message = { message_id: 5, date: 1_700_000_000, chat: { id: chat_id, type: "private" }, text: "hi" }
      const malformed = [
        { ...message, message_id: "5" },
        { ...message, message_id: 5.5 },
        { ...message, date: undefined },
        { ...message, chat: { type: "private" } },
        { ...message, chat: { id: 1.5, type: "private" } },
        { ...message, chat: null },
        true,
        null
      ]
      for (const result of malformed) {
        fake.failNext("sendMessage", FakeTelegram.failure.raw(200, { ok: true, result }))
        const error = yield* failureOf(telegram.sendMessage({ chat_id, text: "hi" }))
        assert.strictEqual(error._tag, "TelegramNetworkError", JSON.stringify(result))
        assert.include(error.message, "did not have the documented shape")
      }
      fake.failNext(
        "sendMessage",
        FakeTelegram.failure.raw(200, { ok: true, result: { ...message, extra: { kept: true } } })
      )
      const sent = yield* telegram.sendMessage({ chat_id, text: "hi" })
      assert.deepStrictEqual(sent as unknown, { ...message, extra: { kept: true } })

      fake.failNext("deleteMessage", FakeTelegram.failure.raw(200, { ok: true, result: false }))
      const notTrue = yield* failureOf(telegram.deleteMessage({ chat_id, message_id: 5 }))
      assert.strictEqual(notTrue._tag, "TelegramNetworkError")
    }))

  it.effect("a call that never answers times out on the clock and its HTTP request is aborted", () =>
    Effect.gen(function*() {
      const telegram = yield* Telegram
      const fake = yield* FakeTelegram.FakeTelegram
      fake.failNext("sendChatAction", FakeTelegram.failure.hang())
      const before = fake.mark()
      const fiber = yield* failureOf(telegram.sendChatAction({ chat_id: freshChat(), action: "typing" })).pipe(
        Effect.forkChild
      )
      const call = yield* fake.awaitCall("sendChatAction", () => true, { after: before })
      yield* TestClock.adjust("30 seconds")
      const error = yield* Fiber.join(fiber)
      assert.strictEqual(error._tag, "TelegramNetworkError")
      assert.include(error.message, "no answer within 30s")
      yield* fake.awaitAborted(call)
    }))

  it.effect("interrupting a call aborts its HTTP request", () =>
    Effect.gen(function*() {
      const telegram = yield* Telegram
      const fake = yield* FakeTelegram.FakeTelegram
      fake.failNext("getMe", FakeTelegram.failure.hang())
      const before = fake.mark()
      const fiber = yield* telegram.getMe.pipe(Effect.forkChild)
      const call = yield* fake.awaitCall("getMe", () => true, { after: before })
      const exit = yield* Fiber.interrupt(fiber).pipe(Effect.andThen(Fiber.await(fiber)))
      assert.isTrue(Exit.isFailure(exit))
      yield* fake.awaitAborted(call)
    }))

  it.effect("on the live clock (its own timer path) a call times out, is aborted, and is aborted on interruption", () =>
    TestClock.withLive(Effect.gen(function*() {
      const fake = yield* FakeTelegram.FakeTelegram
      const transport = yield* Effect.acquireRelease(
        Effect.sync(() => BotApiTransport.make()),
        (transport) => Effect.sync(transport.close)
      )
      const api = new Api(fake.env.TELEGRAM_BOT_TOKEN!, {
        apiRoot: fake.env.TELEGRAM_API_ROOT!,
        timeoutSeconds: 3600,
        fetch: transport.fetch as unknown as typeof fetch
      })
      const call = makeCall(api.raw as unknown as RawApi, yield* BlockedChats.make, makeSendGate({ pacing: false }))
      const getMe = (timeout: Duration.Duration) => call("getMe", undefined, { result: Schema.Unknown, timeout })

      fake.failNext("getMe", FakeTelegram.failure.hang())
      let before = fake.mark()
      const error = yield* Effect.flip(getMe(Duration.millis(50)))
      assert.strictEqual(error._tag, "TelegramNetworkError")
      assert.include(error.message, "no answer within 50ms")
      assertNoToken(error)
      yield* fake.awaitAborted(yield* fake.awaitCall("getMe", () => true, { after: before }))

      const me = yield* getMe(Duration.seconds(10))
      assert.strictEqual((me as { is_bot?: unknown }).is_bot, true)

      fake.failNext("getMe", FakeTelegram.failure.hang())
      before = fake.mark()
      const fiber = yield* getMe(Duration.seconds(10)).pipe(Effect.forkChild)
      const hung = yield* fake.awaitCall("getMe", () => true, { after: before })
      const exit = yield* Fiber.interrupt(fiber).pipe(Effect.andThen(Fiber.await(fiber)))
      assert.isTrue(Exit.isFailure(exit) && Cause.hasInterruptsOnly(exit.cause))
      yield* fake.awaitAborted(hung)
    })))

  it.effect("getUpdates long-polls: held until an update is queued", () =>
    Effect.gen(function*() {
      const telegram = yield* Telegram
      const fake = yield* FakeTelegram.FakeTelegram
      const before = fake.mark()
      const fiber = yield* telegram.getUpdates({ timeout: 25, allowed_updates: ["message", "callback_query"] }).pipe(
        Effect.forkChild
      )
      yield* fake.awaitCall("getUpdates", () => true, { after: before })
      assert.strictEqual(fake.heldPolls(), 1)
      const id = fake.pushUpdate(FakeTelegram.textMessage({ chatId: 5, text: "/start" }))
      const updates = yield* Fiber.join(fiber)
      assert.deepStrictEqual(updates.map((u) => u.update_id), [id])
      assert.strictEqual((updates[0] as any).message.text, "/start")
      // confirm it, so later tests start from an empty queue
      yield* telegram.getUpdates({ offset: id + 1, timeout: 0 })
    }))

  it.effect("getUpdates skips an element without an integer update_id instead of stalling polling", () =>
    Effect.gen(function*() {
      const telegram = yield* Telegram
      const fake = yield* FakeTelegram.FakeTelegram
      const logs = makeLogCapture()
      fake.failNext(
        "getUpdates",
        FakeTelegram.failure.raw(200, {
          ok: true,
          result: [{ update_id: 77, message: { text: "kept" } }, { message: { text: "no id" } }, { update_id: "78" }]
        })
      )
      const updates = yield* telegram.getUpdates({ timeout: 0 }).pipe(Effect.provide(logs.layer))
      assert.deepStrictEqual(updates.map((u) => u.update_id), [77])
      yield* logs.awaitLine((l) => l.message.includes("2 element(s) without an integer update_id; skipped"))
    }))

  it.effect("ensureWebhook calls setWebhook only when something differs, including the secret", () =>
    Effect.gen(function*() {
      const telegram = yield* Telegram
      const fake = yield* FakeTelegram.FakeTelegram
      const spec = {
        url: "https://bot.example.com/telegram/webhook",
        secretToken: Redacted.make("secret_one"),
        allowedUpdates: ["message", "callback_query"] as const,
        maxConnections: 40
      }
      assert.strictEqual(yield* telegram.ensureWebhook(spec), "set")
      const set = yield* fake.awaitCall("setWebhook")
      assert.deepInclude(set.params, {
        url: spec.url,
        secret_token: "secret_one",
        max_connections: 40,
        drop_pending_updates: false
      })
      assert.deepStrictEqual(set.params.allowed_updates, ["message", "callback_query"])

      const before = fake.mark()
      assert.strictEqual(yield* telegram.ensureWebhook(spec), "unchanged")
      assert.strictEqual(fake.calls("setWebhook").filter((c) => c.seq > before).length, 0)
      assert.strictEqual(fake.calls("getWebhookInfo").filter((c) => c.seq > before).length, 1)

      assert.strictEqual(yield* telegram.ensureWebhook({ ...spec, secretToken: Redacted.make("secret_two") }), "set")
      fake.setWebhookDirectly("https://someone.else/hook", "zzz")
      assert.strictEqual(yield* telegram.ensureWebhook({ ...spec, secretToken: Redacted.make("secret_two") }), "set")
      assert.strictEqual(fake.webhook()?.url, spec.url)
      assert.strictEqual(fake.webhook()?.secretToken, "secret_two")
      yield* telegram.deleteWebhook()
      assert.isTrue(Option.isNone(Option.fromNullishOr(fake.webhook())))
    }))

  it.effect("downloadFile: a user's file comes back byte for byte; bytes past 20 MB are refused (tooBig), without the token", () =>
    Effect.gen(function*() {
      const telegram = yield* Telegram
      const fake = yield* FakeTelegram.FakeTelegram
      const bytes = new Uint8Array(300_000).map((_, i) => (i * 7) % 251)
      const fileId = fake.addFile(bytes)
      const got = yield* telegram.downloadFile(fileId)
      assert.strictEqual(got.length, bytes.length)
      assert.isTrue(Buffer.from(got).equals(Buffer.from(bytes)))
      // getFile says it is small; the download itself is over the limit.
      const liar = fake.addFile(new Uint8Array(20 * 1024 * 1024 + 1), { size: 1000 })
      const error = yield* Effect.flip(telegram.downloadFile(liar))
      assert.strictEqual(error._tag, "TelegramFileUnavailable")
      if (error._tag !== "TelegramFileUnavailable") return
      assert.isTrue(error.tooBig)
      assert.include(error.message, liar)
      assert.notInclude(JSON.stringify(error), TOKEN_SECRET)
      assert.strictEqual(fake.fileDownloads().length, 2)
    }))
})

describe("Telegram with a bad token or no server", () => {
  it.effect("401 is TelegramUnauthorized, naming the variable but not the token", () =>
    Effect.gen(function*() {
      const fake = yield* FakeTelegram.make()
      const wrongToken = "987654321:AAWrongTokenWrongTokenWrongToken_xyz"
      const error = yield* Effect.flip(
        getMe.pipe(
          Effect.provide(
            Telegram.layer.pipe(
              Layer.provide(TestDatabaseLive),
              Layer.provideMerge(TestConfigLive({ TELEGRAM_API_ROOT: fake.apiRoot, TELEGRAM_BOT_TOKEN: wrongToken }))
            )
          )
        )
      )
      assert.strictEqual(error._tag, "TelegramUnauthorized")
      assert.include(error.message, "TELEGRAM_BOT_TOKEN")
      assert.notInclude(JSON.stringify(error), wrongToken.split(":")[1]!)
    }))

  it.effect("connection refused is TelegramNetworkError with the errno, not grammY's URL", () =>
    Effect.gen(function*() {
      const error = yield* Effect.flip(
        getMe.pipe(
          Effect.provide(
            Telegram.layer.pipe(Layer.provide(TestDatabaseLive), Layer.provideMerge(TestConfigLive()))
          )
        )
      )
      if (error._tag !== "TelegramNetworkError") return assert.fail(`unexpected ${error._tag}`)
      assert.include(error.message, "ECONNREFUSED")
      assertNoToken(error)
    }))
})
