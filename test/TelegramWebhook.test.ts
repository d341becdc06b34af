import { assert, describe, it, layer } from "@effect/vitest"
import { PgClient } from "@effect/sql-pg"
import { Data, Effect, Fiber, Layer, Redacted } from "effect"
import { SqlClient } from "effect/sql/SqlClient"
import * as http from "node:http"
import * as net from "node:net"
import { Inbox } from "../src/inbox/Inbox.ts"
import { MAX_BODY_BYTES, WEBHOOK_PATH, WebhookRoute } from "../src/intake/TelegramWebhook.ts"
import * as FakeTelegram from "./fakes/FakeTelegram.ts"
import { TEST_WEBHOOK_SECRET, TestConfigLive } from "./support/TestConfig.ts"
import { TestDatabaseLive } from "./support/TestDatabase.ts"
import { serverUrl, TestHttpServerLive } from "./support/TestHttpServer.ts"

const webhookEnv = { PUBLIC_URL: "https://bot.example.com", TELEGRAM_WEBHOOK_SECRET: TEST_WEBHOOK_SECRET }
const SECRET_HEADER = { "x-telegram-bot-api-secret-token": TEST_WEBHOOK_SECRET }

interface Answer {
  readonly status: number
  readonly body: any
}

const post = (url: string, body: string | Uint8Array, headers: Record<string, string> = SECRET_HEADER) =>
  Effect.promise(async (): Promise<Answer> => {
    const response = await fetch(url + WEBHOOK_PATH, {
      method: "POST",
      headers: { "content-type": "application/json", ...headers },
      body: body as string
    })
    const text = await response.text()
    return { status: response.status, body: text === "" ? null : JSON.parse(text) }
  })

/**
 * A raw request whose body we control: `chunks` written one by one without a
 * Content-Length (chunked), or with a declared `contentLength`. Resolves with
 * the response even when the server answers before the body is complete.
 */
const rawPost = (
  url: string,
  options: { readonly chunks: number; readonly chunkSize: number; readonly contentLength?: number }
) =>
  Effect.promise(() =>
    new Promise<Answer & { readonly bytesSent: number }>((resolve, reject) => {
      const target = new URL(url + WEBHOOK_PATH)
      let bytesSent = 0
      const request = http.request({
        host: target.hostname,
        port: target.port,
        path: target.pathname,
        method: "POST",
        headers: {
          "content-type": "application/json",
          ...SECRET_HEADER,
          ...(options.contentLength === undefined ? {} : { "content-length": String(options.contentLength) })
        }
      })
      request.on("response", (response) => {
        const parts: Array<Buffer> = []
        response.on("data", (chunk: Buffer) => parts.push(chunk))
        response.on("end", () => {
          const text = Buffer.concat(parts).toString("utf8")
          resolve({ status: response.statusCode ?? 0, body: text === "" ? null : JSON.parse(text), bytesSent })
        })
      })
      // The server may close the connection after answering; that is expected.
      request.on("error", (error) => (bytesSent > 0 ? undefined : reject(error)))
      const chunk = Buffer.alloc(options.chunkSize, " ")
      let written = 0
      const writeNext = () => {
        while (written < options.chunks) {
          written++
          bytesSent += chunk.length
          if (!request.write(chunk)) return void request.once("drain", writeNext)
        }
        request.end()
      }
      request.flushHeaders()
      writeNext()
    })
  )

/** Ends a test's transaction with a rollback. */
class RollBack extends Data.TaggedError("RollBack")<{}> {}

const update = (updateId: number, chatId = 42) =>
  JSON.stringify({ update_id: updateId, ...FakeTelegram.textMessage({ chatId, text: "/start" }) })

const rowsOf = (updateId: number) =>
  Effect.gen(function*() {
    const sql = yield* SqlClient
    return yield* sql<
      { chat_id: bigint; user_id: bigint; kind: string; status: string; payload: any; received_at: Date }
    >`
      SELECT chat_id, user_id, kind, status, payload, received_at FROM telegram_updates WHERE update_id = ${updateId}`
  })

const WebhookServerLive = TestHttpServerLive(WebhookRoute).pipe(
  Layer.provideMerge(Inbox.layerWithoutHealth),
  Layer.provideMerge(TestDatabaseLive),
  Layer.provideMerge(TestConfigLive(webhookEnv))
)

layer(WebhookServerLive, { timeout: "60 seconds" })("POST /telegram/webhook", (it) => {
  it.effect("401 without the secret header or with a wrong one, and nothing is stored", () =>
    Effect.gen(function*() {
      const url = yield* serverUrl
      const missing = yield* post(url, update(1001), {})
      const wrong = yield* post(url, update(1001), { "x-telegram-bot-api-secret-token": TEST_WEBHOOK_SECRET + "x" })
      const prefix = yield* post(url, update(1001), {
        "x-telegram-bot-api-secret-token": TEST_WEBHOOK_SECRET.slice(0, -1)
      })
      for (const answer of [missing, wrong, prefix]) assert.strictEqual(answer.status, 401)
      assert.lengthOf(yield* rowsOf(1001), 0)
    }))

  it.effect("200 only with the update committed: routing columns, payload and received_at stored", () =>
    Effect.gen(function*() {
      const url = yield* serverUrl
      const answer = yield* post(url, update(1002, 777))
      assert.strictEqual(answer.status, 200)
      assert.deepStrictEqual(answer.body, { ok: true, duplicate: false })
      const [row] = yield* rowsOf(1002)
      assert.isDefined(row)
      assert.strictEqual(row!.chat_id, 777n)
      assert.strictEqual(row!.user_id, 777n)
      assert.strictEqual(row!.kind, "message")
      assert.strictEqual(row!.status, "pending")
      assert.strictEqual(row!.payload.message.text, "/start")
      assert.instanceOf(row!.received_at, Date)
    }))

  it.effect("a duplicate update_id is 200 and stored once", () =>
    Effect.gen(function*() {
      const url = yield* serverUrl
      const first = yield* post(url, update(1003))
      const again = yield* post(url, JSON.stringify({ update_id: 1003, message: { changed: true } }))
      assert.strictEqual(first.status, 200)
      assert.strictEqual(again.status, 200)
      assert.isTrue(again.body.duplicate)
      const rows = yield* rowsOf(1003)
      assert.lengthOf(rows, 1)
      assert.strictEqual(rows[0]!.payload.message.text, "/start", "the first copy is kept")
    }))

  it.effect("a NUL character (which jsonb refuses) is stored as U+FFFD instead of failing forever", () =>
    Effect.gen(function*() {
      const url = yield* serverUrl
      const body = JSON.stringify({
        update_id: 1009,
        message: { message_id: 1, date: 0, chat: { id: 5, type: "private" }, text: "a\u0000b" }
      })
      assert.strictEqual((yield* post(url, body)).status, 200)
      assert.strictEqual((yield* rowsOf(1009))[0]!.payload.message.text, "a\uFFFDb")
    }))

  it.effect("lone surrogates (which jsonb refuses) are stored as U+FFFD: 200, not 503 forever; pairs stay", () =>
    Effect.gen(function*() {
      const url = yield* serverUrl
      // JSON.stringify writes a lone surrogate as the escape `\ud800`, as a sender's JSON would.
      const body = JSON.stringify({
        update_id: 1010,
        message: {
          message_id: 1,
          date: 0,
          chat: { id: 5, type: "private" },
          text: "a\ud800b\udc00c 🖼 \u0000",
          entities: [{ type: "bold", offset: 0, length: 1, "key\udfff": "x" }]
        }
      })
      assert.include(body, "\\ud800")
      const answer = yield* post(url, body)
      assert.strictEqual(answer.status, 200)
      assert.deepStrictEqual(answer.body, { ok: true, duplicate: false })
      const [row] = yield* rowsOf(1010)
      assert.strictEqual(row!.payload.message.text, "a\uFFFDb\uFFFDc 🖼 \uFFFD")
      assert.sameMembers(Object.keys(row!.payload.message.entities[0]), ["type", "offset", "length", "key\uFFFD"])
      assert.strictEqual(row!.status, "pending")
      // Escapes in upper case, as another sender's JSON may write them (and no NUL this time).
      const upper = body.replace("1010", "1011").replace(" \\u0000", "").replace("\\ud800", "\\uD800")
        .replace("\\udc00", "\\uDC00").replace("\\udfff", "\\uDFFF")
      assert.notInclude(upper.toLowerCase(), "\\u0000")
      assert.strictEqual((yield* post(url, upper)).status, 200)
      const [again] = yield* rowsOf(1011)
      assert.strictEqual(again!.payload.message.text, "a\uFFFDb\uFFFDc 🖼")
      assert.sameMembers(Object.keys(again!.payload.message.entities[0]), ["type", "offset", "length", "key\uFFFD"])
    }))

  it.effect("concurrent duplicate POSTs: all 200, exactly one stored it", () =>
    Effect.gen(function*() {
      const url = yield* serverUrl
      const answers = yield* Effect.all(Array.from({ length: 24 }, () => post(url, update(1004))), {
        concurrency: "unbounded"
      })
      assert.isTrue(answers.every((a) => a.status === 200))
      assert.strictEqual(answers.filter((a) => a.body.duplicate === false).length, 1)
      assert.lengthOf(yield* rowsOf(1004), 1)
    }))

  it.effect.each(
    [
      ["not JSON", "{not json"],
      ["empty", ""],
      ["a JSON array", "[1,2]"],
      ["no update_id", JSON.stringify({ message: {} })],
      ["a string update_id", JSON.stringify({ update_id: "1005" })],
      ["a fractional update_id", JSON.stringify({ update_id: 1005.5 })],
      ["a negative update_id", JSON.stringify({ update_id: -5 })],
      ["an update_id beyond 2^53", "{\"update_id\": 9007199254740993}"]
    ] as const
  )("400 for %s", ([, body]) =>
    Effect.gen(function*() {
      const url = yield* serverUrl
      const answer = yield* post(url, body)
      assert.strictEqual(answer.status, 400)
    }))

  it.effect("400 for a body that is not valid UTF-8", () =>
    Effect.gen(function*() {
      const url = yield* serverUrl
      const bytes = new Uint8Array([
        ...Buffer.from("{\"update_id\": 1006, \"x\": \""),
        0xff,
        0xfe,
        ...Buffer.from("\"}")
      ])
      assert.strictEqual((yield* post(url, bytes)).status, 400)
      assert.lengthOf(yield* rowsOf(1006), 0)
    }))

  it.effect("a body of exactly 1 MiB is accepted; one byte more is 413 and not stored", () =>
    Effect.gen(function*() {
      const url = yield* serverUrl
      const pad = (updateId: number, size: number) => {
        const head = `{"update_id": ${updateId}, "pad": "`
        return head + "x".repeat(size - head.length - 2) + "\"}"
      }
      const exact = pad(1007, MAX_BODY_BYTES)
      assert.strictEqual(Buffer.byteLength(exact), MAX_BODY_BYTES)
      assert.strictEqual((yield* post(url, exact)).status, 200)
      const over = pad(1008, MAX_BODY_BYTES + 1)
      assert.strictEqual((yield* post(url, over)).status, 413)
      assert.lengthOf(yield* rowsOf(1008), 0)
    }))

  it.effect("413 from Content-Length alone, before the body is sent", () =>
    Effect.gen(function*() {
      const url = yield* serverUrl
      // Declares 8 MiB but sends only 64 KiB: the answer must come from the header.
      const answer = yield* rawPost(url, { chunks: 1, chunkSize: 64 * 1024, contentLength: 8 * MAX_BODY_BYTES })
      assert.strictEqual(answer.status, 413)
    }))

  it.effect("200 only after the commit: a store held up in the database holds up the answer", () =>
    Effect.gen(function*() {
      const url = yield* serverUrl
      const sql = yield* SqlClient
      // Another transaction inserts the same update_id and stays open: the webhook's INSERT must wait for it.
      let request: Fiber.Fiber<Answer> | undefined
      yield* sql.withTransaction(Effect.gen(function*() {
        yield* sql`INSERT INTO telegram_updates (update_id, kind, payload, received_at)
          VALUES (1020, 'message', '{}'::jsonb, now())`
        const posted = yield* Effect.forkChild(post(url, update(1020)))
        request = posted
        // A real event, not a sleep: the webhook's INSERT is blocked on this transaction's row.
        for (let i = 0;; i++) {
          const [blocked] = yield* sql<{ count: number }>`
            SELECT count(*)::int AS count FROM pg_locks
            WHERE NOT granted AND pg_backend_pid() = ANY(pg_blocking_pids(pid))`
          if (blocked!.count > 0) break
          if (i > 500) assert.fail("the webhook's INSERT never waited on the open transaction")
          yield* Effect.promise(() => new Promise((resolve) => setTimeout(resolve, 10)))
        }
        assert.isUndefined(posted.pollUnsafe(), "answered while its INSERT could not commit")
        return yield* new RollBack()
      })).pipe(Effect.catchTag("RollBack", () => Effect.void), Effect.orDie)
      // Rolled back: the webhook's row is the one committed, and only then is it answered.
      const answer = yield* Fiber.join(request!)
      assert.deepStrictEqual(answer, { status: 200, body: { ok: true, duplicate: false } })
      assert.strictEqual((yield* rowsOf(1020))[0]!.payload.message.text, "/start")
    }))

  it.effect("keep-alive: pipelined webhooks on one connection are each stored and answered in order", () =>
    Effect.gen(function*() {
      const target = new URL(yield* serverUrl)
      const request = (updateId: number) => {
        const body = update(updateId)
        return `POST ${WEBHOOK_PATH} HTTP/1.1\r\nHost: bot\r\nContent-Type: application/json\r\n` +
          `X-Telegram-Bot-Api-Secret-Token: ${TEST_WEBHOOK_SECRET}\r\n` +
          `Content-Length: ${Buffer.byteLength(body)}\r\n\r\n${body}`
      }
      const text = yield* Effect.promise(() =>
        new Promise<string>((resolve, reject) => {
          let received = ""
          const socket = net.connect(
            Number(target.port),
            target.hostname,
            () => socket.write(request(1021) + request(1022) + request(1021))
          )
          socket.on("data", (chunk) => {
            received += chunk.toString("utf8")
            if (received.split("HTTP/1.1 200").length - 1 === 3) {
              socket.destroy()
              resolve(received)
            }
          })
          socket.on("error", reject)
        })
      )
      assert.deepStrictEqual(
        [...text.matchAll(/\{"ok":true,"duplicate":(true|false)\}/g)].map((match) => match[1]),
        ["false", "false", "true"]
      )
      assert.notInclude(text.toLowerCase(), "connection: close")
      assert.lengthOf(yield* rowsOf(1021), 1)
      assert.lengthOf(yield* rowsOf(1022), 1)
    }))

  it.effect("a chunked body within the limit and an Expect: 100-continue request are stored too", () =>
    Effect.gen(function*() {
      const target = new URL((yield* serverUrl) + WEBHOOK_PATH)
      const send = (updateId: number, headers: Record<string, string>) =>
        Effect.promise(() =>
          new Promise<number>((resolve, reject) => {
            const request = http.request({
              host: target.hostname,
              port: target.port,
              path: target.pathname,
              method: "POST",
              headers: { "content-type": "application/json", ...SECRET_HEADER, ...headers }
            })
            request.on("response", (response) => {
              response.resume()
              resolve(response.statusCode ?? 0)
            })
            request.on("error", reject)
            const body = update(updateId)
            if (headers.expect === undefined) {
              request.write(body.slice(0, 10))
              request.end(body.slice(10))
            } else request.on("continue", () => request.end(body))
          })
        )
      assert.strictEqual(yield* send(1023, {}), 200)
      assert.strictEqual(
        yield* send(1024, { expect: "100-continue", "content-length": String(update(1024).length) }),
        200
      )
      assert.lengthOf(yield* rowsOf(1023), 1)
      assert.lengthOf(yield* rowsOf(1024), 1)
    }))

  it.effect("413 for a chunked body over the limit: a real response, not a dropped socket", () =>
    Effect.gen(function*() {
      const url = yield* serverUrl
      const answer = yield* rawPost(url, { chunks: 64, chunkSize: 64 * 1024 })
      assert.strictEqual(answer.status, 413)
      assert.deepInclude(answer.body, { ok: false })
    }))
})

describe("POST /telegram/webhook when the update cannot be stored", () => {
  // The inbox on a database nobody listens on: every store fails at once.
  const DeadDatabaseLive = PgClient.layer({
    url: Redacted.make("postgres://bot:pw@127.0.0.1:1/nothing"),
    connectTimeout: "1 second",
    maxConnections: 1
  })

  it.effect("503 (so Telegram retries), never 200", () =>
    Effect.gen(function*() {
      const url = yield* serverUrl
      const answer = yield* post(url, update(2001))
      assert.strictEqual(answer.status, 503)
    }).pipe(
      Effect.provide(
        TestHttpServerLive(WebhookRoute).pipe(
          Layer.provideMerge(Inbox.layerWithoutHealth),
          Layer.provide(DeadDatabaseLive),
          Layer.provide(TestConfigLive(webhookEnv))
        )
      )
    ))
})

describe("POST /telegram/webhook in long-polling mode", () => {
  it.effect("401 for everything: no secret is configured, so nobody is authorized", () =>
    Effect.gen(function*() {
      const url = yield* serverUrl
      assert.strictEqual((yield* post(url, update(3001))).status, 401)
      assert.strictEqual((yield* post(url, update(3001), { "x-telegram-bot-api-secret-token": "" })).status, 401)
    }).pipe(
      Effect.provide(
        TestHttpServerLive(WebhookRoute).pipe(
          Layer.provideMerge(Inbox.layerWithoutHealth),
          Layer.provide(
            PgClient.layer({ url: Redacted.make("postgres://bot:pw@127.0.0.1:1/nothing"), maxConnections: 1 })
          ),
          Layer.provide(TestConfigLive())
        )
      )
    ))
})
