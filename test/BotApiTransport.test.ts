import { assert, describe, it } from "@effect/vitest"
import { Effect } from "effect"
import { Api, GrammyError, HttpError, InputFile } from "grammy"
import * as http from "node:http"
import type { AddressInfo } from "node:net"
import * as BotApiTransport from "../src/telegram/BotApiTransport.ts"
import { fromGrammy } from "../src/telegram/TelegramErrors.ts"
import * as FakeTelegram from "./fakes/FakeTelegram.ts"
import { TEST_BOT_TOKEN } from "./support/TestConfig.ts"

const TOKEN_SECRET = TEST_BOT_TOKEN.split(":")[1]!

/** A transport for the test, closed with its scope. */
const transport = (options?: BotApiTransport.BotApiTransportOptions) =>
  Effect.acquireRelease(
    Effect.sync(() => BotApiTransport.make(options)),
    (made) => Effect.sync(made.close)
  )

/** grammY's `Api` on `apiRoot` over the transport, as `Telegram.ts` builds it. */
const apiOver = (made: BotApiTransport.BotApiTransport, apiRoot: string, token = TEST_BOT_TOKEN) =>
  new Api(token, { apiRoot, timeoutSeconds: 3600, fetch: made.fetch as unknown as typeof fetch })

/** What a grammY call rejected with. */
const rejection = (promise: Promise<unknown>) =>
  Effect.promise(() => promise.then(() => assert.fail("the call succeeded"), (error: unknown) => error))

/** Every text an error can be shown or logged as: message, stack, JSON, and those of the error it wraps. */
const allTextOf = (error: unknown): string => {
  const inner = error instanceof HttpError ? error.error : undefined
  return [error, inner].flatMap((e) =>
    e instanceof Error ? [e.message, e.stack ?? "", JSON.stringify(e), String(e)] : [JSON.stringify(e)]
  ).join("\n")
}

/** A plain Bot API stand-in that answers `{"ok":true,"result":true}` and counts connections. */
const countingServer = Effect.acquireRelease(
  Effect.promise(() =>
    new Promise<{ readonly root: string; readonly connections: () => number; readonly close: () => Promise<void> }>(
      (resolve) => {
        let connections = 0
        const server = http.createServer((request, response) => {
          request.resume()
          request.on("end", () => {
            response.writeHead(200, { "content-type": "application/json" })
            response.end("{\"ok\":true,\"result\":true}")
          })
        })
        server.on("connection", () => connections++)
        server.listen(0, "127.0.0.1", () =>
          resolve({
            root: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
            connections: () => connections,
            close: () =>
              new Promise((done) => {
                server.closeAllConnections()
                server.close(() => done())
              })
          }))
      }
    )
  ),
  (server) => Effect.promise(server.close)
)

/** A loopback port nothing listens on (bound, then released). */
const closedPort = Effect.promise(() =>
  new Promise<number>((resolve) => {
    const server = http.createServer()
    server.listen(0, "127.0.0.1", () => {
      const port = (server.address() as AddressInfo).port
      server.close(() => resolve(port))
    })
  })
)

describe("BotApiTransport", () => {
  it.effect("headers as a plain object, an entry list or a Headers object all reach the server", () =>
    Effect.gen(function*() {
      const seen: Array<string | undefined> = []
      const server = http.createServer((request, response) => {
        seen.push(request.headers["x-probe"] as string | undefined)
        request.resume()
        request.on("end", () => response.end("{}"))
      })
      yield* Effect.acquireRelease(
        Effect.promise(() => new Promise<void>((resolve) => server.listen(0, "127.0.0.1", () => resolve()))),
        () => Effect.promise(() => new Promise<void>((resolve) => server.close(() => resolve())))
      )
      const made = yield* transport()
      const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/probe`
      for (const headers of [{ "x-probe": "object" }, [["x-probe", "list"]], new Headers({ "x-probe": "headers" })]) {
        const response = yield* Effect.promise(() => made.fetch(url, { method: "POST", headers, body: "{}" }))
        assert.strictEqual(response.status, 200)
      }
      assert.deepStrictEqual(seen, ["object", "list", "headers"])
    }).pipe(Effect.scoped))

  it.effect("a JSON call goes through grammY and comes back as the result", () =>
    Effect.gen(function*() {
      const fake = yield* FakeTelegram.make()
      const api = apiOver(yield* transport(), fake.env.TELEGRAM_API_ROOT!)
      const markup = { inline_keyboard: [[{ text: "🎨 go", callback_data: "zimage:start" }]] }
      const sent = yield* Effect.promise(() => api.sendMessage(42, "Привет, мир", { reply_markup: markup }))
      assert.strictEqual(sent.chat.id, 42)
      assert.strictEqual(sent.text, "Привет, мир")
      const call = yield* fake.awaitCall("sendMessage")
      assert.strictEqual(call.transport, "json")
      assert.deepStrictEqual(call.params.reply_markup, markup)
      const me = yield* Effect.promise(() => api.getMe())
      assert.strictEqual(me.username, "fake_bot")
    }))

  it.effect("a multipart upload sends the file's bytes, from memory or from a stream", () =>
    Effect.gen(function*() {
      const fake = yield* FakeTelegram.make()
      const api = apiOver(yield* transport(), fake.env.TELEGRAM_API_ROOT!)
      const bytes = new Uint8Array(300_000).map((_, i) => i % 251)
      const photo = yield* Effect.promise(() =>
        api.sendPhoto(7, new InputFile(bytes, "picture.png"), { caption: "✅ Готово!" })
      )
      assert.strictEqual(photo.caption, "✅ Готово!")
      async function* chunks() {
        for (let offset = 0; offset < bytes.length; offset += 65_536) yield bytes.subarray(offset, offset + 65_536)
      }
      yield* Effect.promise(() => api.sendDocument(7, new InputFile(chunks(), "original.png")))
      const [upload] = fake.calls("sendPhoto")
      const [document] = fake.calls("sendDocument")
      for (const [call, field] of [[upload, "photo"], [document, "document"]] as const) {
        assert.strictEqual(call?.transport, "multipart")
        const file = call?.files[0]
        assert.strictEqual(call?.params[field], `attach://${file?.field}`)
        assert.strictEqual(file?.size, bytes.length)
        assert.deepStrictEqual(file?.bytes, bytes)
      }
    }))

  it.effect("a file stream that fails ends the upload as grammY's HttpError", () =>
    Effect.gen(function*() {
      const fake = yield* FakeTelegram.make()
      const api = apiOver(yield* transport(), fake.env.TELEGRAM_API_ROOT!)
      async function* broken() {
        yield new Uint8Array(1000)
        throw new Error("disk gone")
      }
      const error = yield* rejection(api.sendDocument(7, new InputFile(broken(), "broken.png")))
      assert.instanceOf(error, HttpError)
      assert.lengthOf(fake.calls("sendDocument").filter((c) => c.response?.status === 200), 0)
      // The transport still works afterwards.
      yield* Effect.promise(() => api.sendMessage(7, "still here"))
    }))

  // The service's own timeout aborts the same way (Telegram.test.ts: "a call that never answers times out…").
  it.effect("aborting a call destroys its HTTP request, and grammY reports it as aborted", () =>
    Effect.gen(function*() {
      const fake = yield* FakeTelegram.make()
      const api = apiOver(yield* transport(), fake.env.TELEGRAM_API_ROOT!)
      fake.failNext("sendChatAction", FakeTelegram.failure.hang())
      const controller = new AbortController()
      // grammY types its signal as the abort-controller polyfill's; a native one works the same.
      const pending = rejection(api.sendChatAction(9, "typing", {}, controller.signal as never))
      const call = yield* fake.awaitCall("sendChatAction")
      controller.abort()
      const error = yield* pending
      assert.instanceOf(error, HttpError)
      assert.strictEqual(
        (error as HttpError).error instanceof Error && ((error as HttpError).error as Error).name,
        "AbortError"
      )
      assert.strictEqual(
        fromGrammy("sendChatAction", 9, error).message,
        "Telegram sendChatAction failed: request aborted"
      )
      yield* fake.awaitAborted(call)
      // A signal aborted before the call: nothing is sent.
      const before = fake.mark()
      const already = yield* rejection(api.sendChatAction(9, "typing", {}, AbortSignal.abort() as never))
      assert.instanceOf(already, HttpError)
      assert.lengthOf(fake.calls("sendChatAction").filter((c) => c.seq > before), 0)
    }))

  it.effect("a non-2xx Bot API answer is still grammY's GrammyError (and the typed error it maps to)", () =>
    Effect.gen(function*() {
      const fake = yield* FakeTelegram.make()
      const api = apiOver(yield* transport(), fake.env.TELEGRAM_API_ROOT!)
      fake.failNext("sendMessage", FakeTelegram.failure.rateLimited(5))
      const limited = yield* rejection(api.sendMessage(3, "x"))
      assert.instanceOf(limited, GrammyError)
      assert.strictEqual((limited as GrammyError).error_code, 429)
      assert.strictEqual((limited as GrammyError).parameters.retry_after, 5)
      fake.failNext("sendMessage", FakeTelegram.failure.error(400, "Bad Request: chat not found"))
      const missing = yield* rejection(api.sendMessage(3, "x"))
      assert.strictEqual(fromGrammy("sendMessage", 3, missing)._tag, "TelegramChatBlocked")
      // A proxy's HTML page is not Bot API JSON.
      fake.failNext("getMe", FakeTelegram.failure.notJson())
      const html = yield* rejection(api.getMe())
      assert.instanceOf(html, HttpError)
      assert.include(fromGrammy("getMe", undefined, html).message, "not Bot API JSON")
      // A dropped connection is a network error.
      fake.failNext("getMe", FakeTelegram.failure.disconnect())
      const dropped = yield* rejection(api.getMe())
      assert.instanceOf(dropped, HttpError)
      assert.strictEqual(fromGrammy("getMe", undefined, dropped)._tag, "TelegramNetworkError")
      for (const error of [limited, missing, html, dropped]) assert.notInclude(allTextOf(error), TOKEN_SECRET)
    }))

  it.effect("connection refused is a network error with the errno, and no text of it holds the token", () =>
    Effect.gen(function*() {
      const port = yield* closedPort
      const api = apiOver(yield* transport(), `http://127.0.0.1:${port}`)
      const error = yield* rejection(api.sendMessage(5, "hello"))
      assert.instanceOf(error, HttpError)
      const inner = (error as HttpError).error
      assert.instanceOf(inner, BotApiTransport.BotApiTransportError)
      assert.strictEqual((inner as BotApiTransport.BotApiTransportError).code, "ECONNREFUSED")
      const typed = fromGrammy("sendMessage", 5, error)
      assert.strictEqual(typed.message, "Telegram sendMessage failed: network error ECONNREFUSED")
      assert.notInclude(allTextOf(error), TOKEN_SECRET)
      assert.notInclude(JSON.stringify(typed), TOKEN_SECRET)
    }))

  it.effect("sequential calls reuse one keep-alive connection; close drops it", () =>
    Effect.gen(function*() {
      const server = yield* countingServer
      const made = yield* transport()
      const api = apiOver(made, server.root)
      for (let i = 0; i < 5; i++) {
        assert.isTrue(yield* Effect.promise(() => api.sendChatAction(1, "typing")))
      }
      assert.strictEqual(server.connections(), 1)
      made.close()
      assert.isTrue(yield* Effect.promise(() => api.sendChatAction(1, "typing")))
      assert.strictEqual(server.connections(), 2)
    }))

  it.effect("concurrent calls open at most maxSockets connections", () =>
    Effect.gen(function*() {
      const server = yield* countingServer
      const api = apiOver(yield* transport({ maxSockets: 2 }), server.root)
      yield* Effect.promise(() => Promise.all(Array.from({ length: 10 }, () => api.sendChatAction(1, "typing"))))
      assert.strictEqual(server.connections(), 2)
    }))

  it.effect("an answer longer than maxResponseBytes fails the call", () =>
    Effect.gen(function*() {
      const fake = yield* FakeTelegram.make()
      const api = apiOver(yield* transport({ maxResponseBytes: 64 }), fake.env.TELEGRAM_API_ROOT!)
      const error = yield* rejection(api.sendMessage(11, "a text longer than the limit on answers"))
      assert.instanceOf(error, HttpError)
      assert.strictEqual(
        fromGrammy("sendMessage", 11, error).message,
        "Telegram sendMessage failed: network error RESPONSE_TOO_LARGE"
      )
    }))
})
