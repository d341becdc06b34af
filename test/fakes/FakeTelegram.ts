/**
 * FakeTelegram: a small Telegram Bot API server for tests, on 127.0.0.1.
 *
 * It is a real HTTP server (plain `node:http`) at `/bot<token>/<method>` that
 * answers like the Bot API: `{"ok":true,"result":…}` or
 * `{"ok":false,"error_code":N,"description":"…","parameters":{…}}` with the
 * HTTP status equal to `error_code`. It accepts JSON, multipart (what grammY
 * sends when a file is uploaded), url-encoded and query-string parameters, and
 * records every call.
 *
 * ## Getting one
 *
 *   const fake = yield* FakeTelegram.make()          // scoped: closes with the scope
 *   // or: layer(FakeTelegram.layer())(...) and `yield* FakeTelegram`
 *   TestConfigLive({ ...fake.env })                   // TELEGRAM_API_ROOT + TELEGRAM_BOT_TOKEN
 *
 * ## What it implements (and how it differs from Telegram)
 *
 * - getMe; getUpdates with real long polling: the request is held up to
 *   `timeout` seconds or until an update is queued; `offset` confirms (updates
 *   with a smaller id are forgotten; a negative offset keeps the last -offset);
 *   at most `limit` (1–100, default 100); `allowed_updates` is remembered, like
 *   Telegram, and updates of other kinds are dropped on delivery.
 * - 409 like Telegram: getUpdates while a webhook is set ("can't use getUpdates
 *   method while webhook is active; use deleteWebhook to delete the webhook
 *   first"); a second getUpdates while one is held terminates the held one
 *   with "Conflict: terminated by other getUpdates request; make sure that
 *   only one bot instance is running" and serves the new one.
 * - setWebhook / deleteWebhook (`drop_pending_updates`) / getWebhookInfo. While
 *   a webhook is set, queued updates are POSTed to it one at a time, in order,
 *   with `X-Telegram-Bot-Api-Secret-Token`; a non-2xx answer or an error is
 *   recorded as `last_error_message` and retried after `webhookRetryDelayMs`.
 *   Unlike Telegram, any http(s) URL and port is accepted (tests use loopback),
 *   and delivery is sequential rather than up to `max_connections` at once.
 * - sendMessage, editMessageText, editMessageReplyMarkup, deleteMessage,
 *   sendPhoto, sendDocument (file_id/URL strings or uploaded files),
 *   sendChatAction, answerCallbackQuery, setMyCommands. Message ids are
 *   assigned per chat from 1; edits answer 400 "message is not modified" when
 *   nothing changes and "message to edit not found" for unknown ids; texts and
 *   captions are length-checked as documented.
 * - `blockChat(id)`: every call to that chat answers 403 "Forbidden: bot was
 *   blocked by the user" until `unblockChat(id)`.
 * - Unknown token: 401 "Unauthorized". Unknown method: 404 "Not Found".
 *
 * ## Failure injection
 *
 *   fake.failNext("sendMessage", FakeTelegram.failure.rateLimited(5), 2)
 *
 * answers the next 2 sendMessage calls with 429 retry_after 5. Other failures:
 * `blocked()`, `notModified()`, `serverError()`, `error(code, description)`,
 * `hang()` (never answers until the client gives up), `disconnect()` (drops the
 * socket), `notJson()` (a 502 HTML page, like a proxy in front of Telegram) and
 * `raw(status, body)` (any answer, e.g. a malformed result).
 *
 * ## Waiting without sleeping
 *
 * `awaitCall(method, where?, { after?, timeoutMs? })` resolves with the first
 * recorded call of `method` matching `where` (already recorded ones count,
 * unless `after` names a `mark()` taken earlier), or fails after `timeoutMs`
 * of real time (default 5000). It is event-driven: it resolves the moment the
 * request arrives. `awaitDelivery` does the same for webhook deliveries.
 *
 * ## Building updates
 *
 * `FakeTelegram.textMessage({ chatId, text })` and
 * `FakeTelegram.callbackQuery({ chatId, data, messageId })` build realistic
 * updates; `pushUpdate(update)` queues one (assigning `update_id` if absent,
 * increasing like Telegram's) and returns its id. A negative `chatId` is a
 * supergroup; `threadId` puts a message in a forum topic; `replyTo` makes it a
 * reply (to the bot's message by default).
 *
 * `pressButton({ chatId, userId, messageId, data })` pushes the press of a
 * button on a message the bot sent, with that message as Telegram stores it:
 * its topic, and the message it replies to (with that message's sender, as
 * pushed earlier) as `reply_to_message`.
 *
 * ## The chat page
 *
 * `fake.page` (ChatPageApi.ts, served at `/chat/...` on the same port) lets a
 * browser be the users: what they type, send and press becomes real updates,
 * and the page long-polls the conversation (the bot's messages as edited,
 * pictures and documents with their bytes, callback answers, typing). The
 * sandbox (`npm run sandbox`) serves its page and faults panel through the
 * `routes` option.
 */
import { Context, Data, Effect, Layer, type Scope } from "effect"
import * as http from "node:http"
import type { AddressInfo } from "node:net"
import { TEST_BOT_TOKEN } from "../support/TestConfig.ts"
import { type ChatPage, makeChatPage } from "./ChatPageApi.ts"

// ---------------------------------------------------------------------------
// Types

export interface UploadedFile {
  readonly field: string
  readonly filename: string
  readonly type: string
  readonly size: number
  /** The bytes sent (the chat page shows them). */
  readonly bytes?: Uint8Array
}

export interface RecordedCall {
  /** Increasing from 1 in arrival order; compare with `mark()`. */
  readonly seq: number
  readonly method: string
  readonly params: Readonly<Record<string, unknown>>
  readonly files: ReadonlyArray<UploadedFile>
  readonly transport: "json" | "multipart" | "form" | "query"
  /** Wall-clock arrival time (ms since epoch). */
  readonly at: number
  /** Filled in when the call is answered (not for `hang`/`disconnect`). */
  response?: { readonly status: number; readonly body: unknown }
  /** Set when the client closed the connection before an answer (timeout, interruption). */
  aborted?: boolean
}

/** The `message_id` Telegram answered a recorded send with; throws when the call got no such answer. */
export const messageIdOf = (call: RecordedCall): number => {
  const body = call.response?.body as { result?: { message_id?: unknown } } | undefined
  const id = body?.result?.message_id
  if (typeof id !== "number") throw new Error(`${call.method} (call ${call.seq}) was not answered with a message_id`)
  return id
}

export interface WebhookState {
  readonly url: string
  readonly secretToken: string | undefined
  readonly maxConnections: number
  readonly allowedUpdates: ReadonlyArray<string> | undefined
  readonly lastErrorDate: number | undefined
  readonly lastErrorMessage: string | undefined
}

export interface WebhookDelivery {
  readonly updateId: number
  readonly status: number | "error"
  readonly at: number
}

export interface StoredMessage {
  readonly chatId: number
  readonly messageId: number
  readonly kind: "text" | "photo" | "document"
  readonly text: string | undefined
  readonly caption: string | undefined
  readonly replyMarkup: unknown
  /** The forum topic it was sent to (`message_thread_id`). */
  readonly threadId: number | undefined
  /** The message it replies to (`reply_parameters.message_id`). */
  readonly replyTo: number | undefined
}

export type FakeFailure =
  | { readonly _tag: "Error"; readonly code: number; readonly description: string; readonly parameters?: object }
  | { readonly _tag: "Hang" }
  | { readonly _tag: "Disconnect" }
  | { readonly _tag: "NotJson" }
  | { readonly _tag: "Raw"; readonly status: number; readonly body: unknown }
  | { readonly _tag: "Delayed"; readonly until: Promise<void> }

export const failure = {
  rateLimited: (retryAfter: number): FakeFailure => ({
    _tag: "Error",
    code: 429,
    description: `Too Many Requests: retry after ${retryAfter}`,
    parameters: { retry_after: retryAfter }
  }),
  blocked: (): FakeFailure => ({ _tag: "Error", code: 403, description: "Forbidden: bot was blocked by the user" }),
  notModified: (): FakeFailure => ({
    _tag: "Error",
    code: 400,
    description:
      "Bad Request: message is not modified: specified new message content and reply markup are exactly the same as a current content and reply markup of the message"
  }),
  serverError: (): FakeFailure => ({ _tag: "Error", code: 500, description: "Internal Server Error" }),
  error: (code: number, description: string, parameters?: object): FakeFailure => ({
    _tag: "Error",
    code,
    description,
    ...(parameters === undefined ? {} : { parameters })
  }),
  hang: (): FakeFailure => ({ _tag: "Hang" }),
  disconnect: (): FakeFailure => ({ _tag: "Disconnect" }),
  notJson: (): FakeFailure => ({ _tag: "NotJson" }),
  /** Any answer at all, e.g. a malformed `result`. */
  raw: (status: number, body: unknown): FakeFailure => ({ _tag: "Raw", status, body }),
  /**
   * A slow network: the request is recorded on arrival, but Telegram acts on
   * it (and answers) only once `until` resolves; then it is handled as usual.
   * Meanwhile it does not count as busy for `idle`.
   */
  delayed: (until: Promise<void>): FakeFailure => ({ _tag: "Delayed", until })
} as const

export class FakeTelegramTimeout extends Data.TaggedError("FakeTelegramTimeout")<{ readonly message: string }> {}

export interface FakeTelegramShape {
  /** `http://127.0.0.1:<port>`, for TELEGRAM_API_ROOT. */
  readonly apiRoot: string
  readonly token: string
  /** `{ TELEGRAM_API_ROOT, TELEGRAM_BOT_TOKEN }` for `TestConfigLive`. */
  readonly env: Readonly<Record<string, string>>
  readonly calls: (method?: string) => ReadonlyArray<RecordedCall>
  /** The current call sequence number; pass it as `after` to wait only for later calls. */
  readonly mark: () => number
  /**
   * Tells `listener` of every call from now on, as it is recorded (after its
   * answer was decided); returns the function that stops it. For load
   * generators that wait for thousands of calls, where `awaitCall`'s scan of
   * all calls so far would cost more than the calls.
   */
  readonly onCall: (listener: (call: RecordedCall) => void) => () => void
  readonly awaitCall: (
    method: string,
    where?: (call: RecordedCall) => boolean,
    options?: { readonly after?: number; readonly timeoutMs?: number }
  ) => Effect.Effect<RecordedCall, FakeTelegramTimeout>
  /** Queues an update (assigning `update_id` if absent) and returns its id. */
  /** Resolves once the client gave up on `call` (closed the connection before an answer). */
  readonly awaitAborted: (call: RecordedCall, options?: { readonly timeoutMs?: number }) => Effect.Effect<
    RecordedCall,
    FakeTelegramTimeout
  >
  readonly pushUpdate: (update: Record<string, unknown>) => number
  /** Pushes a press of a button on the bot's message `messageId` (as stored) and returns the update id. */
  readonly pressButton: (options: {
    readonly chatId: number
    readonly userId: number
    readonly messageId: number
    readonly data: string
    readonly id?: string
    readonly languageCode?: string
  }) => number
  /** Updates queued and not yet confirmed (getUpdates) or delivered (webhook). */
  readonly pendingUpdates: () => ReadonlyArray<Record<string, unknown>>
  readonly failNext: (method: string, failure: FakeFailure, times?: number) => void
  readonly blockChat: (chatId: number) => void
  readonly unblockChat: (chatId: number) => void
  readonly webhook: () => WebhookState | undefined
  /** Sets the webhook as if another deployment had called setWebhook (`""` removes it). */
  readonly setWebhookDirectly: (url: string, secretToken?: string) => void
  readonly deliveries: () => ReadonlyArray<WebhookDelivery>
  /** Like `awaitCall`, for webhook deliveries; `after` is a `deliveries().length` taken earlier. */
  readonly awaitDelivery: (
    where: (delivery: WebhookDelivery) => boolean,
    options?: { readonly timeoutMs?: number; readonly after?: number }
  ) => Effect.Effect<WebhookDelivery, FakeTelegramTimeout>
  readonly messages: (chatId: number) => ReadonlyArray<StoredMessage>
  readonly answeredCallbackQueries: () => ReadonlyArray<string>
  readonly commands: () => unknown
  /** getUpdates requests being held right now (0 or 1). */
  readonly heldPolls: () => number
  /**
   * Resolves once no request is being answered (held polls and injected
   * hangs aside) and nothing new arrived for `quietMs`; bounded by
   * `timeoutMs`. Lets a TestClock test wait for the real I/O a clock step set
   * off instead of guessing a delay.
   */
  readonly idle: (quietMs?: number, timeoutMs?: number) => Promise<void>
  /** Calls to `chatId` answered 429 by the per-chat flood control (`floodControl` option). */
  readonly floodLimited: (chatId: number) => number
  /**
   * Stores a file a user "sent" and returns its `file_id`: getFile answers
   * its `file_path`, `GET /file/bot<token>/<path>` serves the bytes. `size`
   * overrides the size getFile and the photo report (a file over 20 MB is
   * refused by getFile with "file is too big", like Telegram).
   */
  readonly addFile: (bytes: Uint8Array, options?: { readonly size?: number }) => string
  /** Downloads of `/file/bot<token>/...` answered, by file_path. */
  readonly fileDownloads: () => ReadonlyArray<string>
  /** The chat page's API (`/chat/...`, see ChatPageApi.ts): users' messages, pictures, presses, and the state. */
  readonly page: ChatPage
}

/** Telegram's limit on files a bot may download with getFile. */
export const BOT_DOWNLOAD_LIMIT = 20 * 1024 * 1024

/**
 * A `message` update with a photo (`fileId` from `addFile`, as its largest
 * size) and an optional caption; `asDocument` sends it "as a file" (an image
 * `document`); `mediaGroupId` puts it in an album.
 */
export const photoMessage = (options: {
  readonly chatId: number
  readonly fileId: string
  readonly caption?: string
  readonly size?: number
  readonly userId?: number
  readonly messageId?: number
  readonly languageCode?: string
  readonly asDocument?: boolean
  readonly mediaGroupId?: string
  readonly replyTo?: { readonly messageId: number; readonly from?: Record<string, unknown> }
}): Record<string, unknown> => {
  const size = options.size ?? 50_000
  const picture = options.asDocument === true
    ? {
      document: {
        file_id: options.fileId,
        file_unique_id: `u${options.fileId}`,
        file_name: "photo.png",
        mime_type: "image/png",
        file_size: size
      }
    }
    : {
      photo: [
        {
          file_id: `${options.fileId}-small`,
          file_unique_id: `s${options.fileId}`,
          width: 90,
          height: 90,
          file_size: 1000
        },
        { file_id: options.fileId, file_unique_id: `u${options.fileId}`, width: 1280, height: 1280, file_size: size }
      ]
    }
  return {
    message: {
      message_id: options.messageId ?? 1,
      from: user(options.userId ?? Math.abs(options.chatId), options.languageCode),
      chat: chatOf(options.chatId),
      date: Math.floor(Date.now() / 1000),
      ...picture,
      ...(options.caption === undefined ? {} : { caption: options.caption }),
      ...(options.mediaGroupId === undefined ? {} : { media_group_id: options.mediaGroupId }),
      ...(options.replyTo === undefined ? {} : {
        reply_to_message: {
          message_id: options.replyTo.messageId,
          from: options.replyTo.from ?? fakeBot,
          chat: chatOf(options.chatId),
          date: Math.floor(Date.now() / 1000)
        }
      })
    }
  }
}

// ---------------------------------------------------------------------------
// Update builders

let nextCallbackId = 1

/** The fake's bot, as getMe describes it (for the default token). */
export const fakeBot = {
  id: Number(TEST_BOT_TOKEN.split(":")[0]),
  is_bot: true,
  first_name: "Fake Bot",
  username: "fake_bot"
} as const

/**
 * The "topic created" service message of forum topic `threadId`, opened by a
 * member (id 999). Telegram puts it in `reply_to_message` of every message in
 * the topic that replies to nothing else.
 */
export const topicCreated = (chatId: number, threadId: number) => ({
  message_id: threadId,
  from: user(999),
  chat: chatOf(chatId),
  date: 0,
  message_thread_id: threadId,
  is_topic_message: true,
  forum_topic_created: { name: `Topic ${threadId}`, icon_color: 7322096 }
})

export const user = (id: number, languageCode = "ru") => ({
  id,
  is_bot: false,
  first_name: `User ${id}`,
  username: `user${id}`,
  language_code: languageCode
})

const chatOf = (chatId: number) =>
  chatId > 0
    ? { id: chatId, type: "private", first_name: `User ${chatId}`, username: `user${chatId}` }
    : { id: chatId, type: "supergroup", title: `Group ${chatId}` }

/** A `message` update with `text` (commands get a `bot_command` entity). */
export const textMessage = (options: {
  readonly chatId: number
  readonly text: string
  readonly userId?: number
  readonly messageId?: number
  readonly languageCode?: string
  readonly updateId?: number
  /** A forum topic. */
  readonly threadId?: number
  /** The message this one replies to, by default the bot's; `extra` adds its content (e.g. `photo`). */
  readonly replyTo?: {
    readonly messageId: number
    readonly from?: Record<string, unknown>
    readonly extra?: Record<string, unknown>
  }
}): Record<string, unknown> => {
  const command = /^\/\w+/.exec(options.text)
  return {
    ...(options.updateId === undefined ? {} : { update_id: options.updateId }),
    message: {
      message_id: options.messageId ?? 1,
      from: user(options.userId ?? Math.abs(options.chatId), options.languageCode),
      chat: chatOf(options.chatId),
      date: Math.floor(Date.now() / 1000),
      ...(options.threadId === undefined ? {} : { message_thread_id: options.threadId, is_topic_message: true }),
      ...(options.replyTo === undefined
        ? options.threadId === undefined ? {} : { reply_to_message: topicCreated(options.chatId, options.threadId) }
        : {
          reply_to_message: {
            message_id: options.replyTo.messageId,
            from: options.replyTo.from ?? fakeBot,
            chat: chatOf(options.chatId),
            date: Math.floor(Date.now() / 1000),
            ...options.replyTo.extra
          }
        }),
      text: options.text,
      ...(command === null ? {} : { entities: [{ type: "bot_command", offset: 0, length: command[0].length }] })
    }
  }
}

/** A `callback_query` update for a button on message `messageId` in `chatId`. */
export const callbackQuery = (options: {
  readonly chatId: number
  readonly data: string
  readonly messageId?: number
  readonly userId?: number
  readonly languageCode?: string
  readonly id?: string
  readonly updateId?: number
}): Record<string, unknown> => ({
  ...(options.updateId === undefined ? {} : { update_id: options.updateId }),
  callback_query: {
    id: options.id ?? `cbq-${nextCallbackId++}`,
    from: user(options.userId ?? Math.abs(options.chatId), options.languageCode),
    message: {
      message_id: options.messageId ?? 1,
      from: { id: 1, is_bot: true, first_name: "Fake Bot", username: "fake_bot" },
      chat: chatOf(options.chatId),
      date: Math.floor(Date.now() / 1000),
      text: "…"
    },
    chat_instance: `ci-${options.chatId}`,
    data: options.data
  }
})

// ---------------------------------------------------------------------------
// Server

const CONFLICT_OTHER_POLL =
  "Conflict: terminated by other getUpdates request; make sure that only one bot instance is running"
const CONFLICT_WEBHOOK =
  "Conflict: can't use getUpdates method while webhook is active; use deleteWebhook to delete the webhook first"
const NOT_MODIFIED = failure.notModified() as { readonly description: string }

const INTEGER_FIELDS = new Set([
  "chat_id",
  "message_id",
  "message_thread_id",
  "offset",
  "limit",
  "timeout",
  "max_connections"
])
const JSON_FIELDS = new Set([
  "reply_markup",
  "entities",
  "caption_entities",
  "reply_parameters",
  "link_preview_options",
  "allowed_updates",
  "commands",
  "scope"
])
const BOOLEAN_FIELDS = new Set(["drop_pending_updates", "show_alert", "disable_notification", "protect_content"])

/** Multipart and url-encoded values are strings; read them the way Telegram does. */
const coerce = (key: string, value: string): unknown => {
  if (INTEGER_FIELDS.has(key) && /^-?\d+$/.test(value)) return Number(value)
  if (BOOLEAN_FIELDS.has(key)) return value === "true" || value === "1"
  if (JSON_FIELDS.has(key)) {
    try {
      return JSON.parse(value)
    } catch {
      return value
    }
  }
  return value
}

interface HeldPoll {
  readonly call: RecordedCall
  readonly res: http.ServerResponse
  readonly limit: number
  readonly timer: NodeJS.Timeout
}

interface Waiter<A> {
  readonly match: (value: A) => boolean
  readonly resolve: (value: A) => void
}

export interface FakeTelegramOptions {
  readonly token?: string
  /** The port to listen on (0, the default: any free one). */
  readonly port?: number
  /**
   * More routes on the fake's port, tried before the Bot API (the sandbox
   * serves its page and faults panel this way); true when handled.
   */
  readonly routes?: (req: http.IncomingMessage, res: http.ServerResponse, url: URL) => boolean | Promise<boolean>
  /** Delay before a failed webhook delivery is retried (real time). */
  readonly webhookRetryDelayMs?: number
  /** Every answer leaves this long after the request arrived, like the network to api.telegram.org. */
  readonly latencyMs?: number
  /**
   * Telegram's per-chat flood control: more than `perSecond` calls to one
   * chat within a second answer 429 with `retry_after` = `retryAfter`, and
   * every call to that chat does until the wait is over (real time).
   */
  readonly floodControl?: {
    readonly perSecond: number
    readonly retryAfter: number
    /** A stricter (or looser) limit for some chats: Telegram's real limits are dynamic. */
    readonly perSecondFor?: (chatId: number) => number | undefined
  }
}

export const make = (options: FakeTelegramOptions = {}): Effect.Effect<FakeTelegramShape, never, Scope.Scope> =>
  Effect.acquireRelease(Effect.promise(() => start(options)), (fake) => Effect.promise(() => fake.close()))

const start = async (options: FakeTelegramOptions) => {
  const token = options.token ?? TEST_BOT_TOKEN
  const botId = Number(token.split(":")[0])
  const bot = { ...fakeBot, id: botId }
  const retryDelay = options.webhookRetryDelayMs ?? 200

  const calls: Array<RecordedCall> = []
  const callWaiters = new Set<Waiter<RecordedCall>>()
  const abortWaiters = new Set<Waiter<RecordedCall>>()
  const deliveries: Array<WebhookDelivery> = []
  const deliveryWaiters = new Set<Waiter<WebhookDelivery>>()
  let queue: Array<Record<string, unknown>> = []
  let nextUpdateId = 700_000_001
  let allowedUpdates: ReadonlyArray<string> | undefined
  let held: HeldPoll | undefined
  let webhook: WebhookState | undefined
  const failures = new Map<string, Array<FakeFailure>>()
  const blocked = new Set<number>()
  const chats = new Map<number, { nextId: number; messages: Map<number, StoredMessage> }>()
  /** Messages users sent (pushed updates), by `<chat>/<message id>`: what a bot message may reply to. */
  const userMessages = new Map<string, Record<string, unknown>>()
  const answered: Array<string> = []
  /** Files users sent: file_id → bytes, reported size and path. */
  const files = new Map<string, { readonly bytes: Uint8Array; readonly size: number; readonly path: string }>()
  const downloads: Array<string> = []
  let commands: unknown = []
  const sockets = new Set<import("node:net").Socket>()
  const hung = new Set<http.ServerResponse>()
  let closed = false
  /** Requests being answered (not held or hung); changes on every arrival and answer. */
  let busy = 0
  let activity = 0

  /** `onCall` listeners: told of every call as it is recorded. */
  const callListeners = new Set<(call: RecordedCall) => void>()

  const notify = <A>(waiters: Set<Waiter<A>>, value: A) => {
    for (const waiter of Array.from(waiters)) {
      if (waiter.match(value)) {
        waiters.delete(waiter)
        waiter.resolve(value)
      }
    }
  }

  const latencyMs = options.latencyMs ?? 0
  const send = (call: RecordedCall | undefined, res: http.ServerResponse, status: number, body: unknown) => {
    if (res.writableEnded || res.destroyed) return
    if (call !== undefined) call.response = { status, body }
    const text = JSON.stringify(body)
    const write = () => {
      if (res.writableEnded || res.destroyed) return
      res.writeHead(status, { "content-type": "application/json", "content-length": Buffer.byteLength(text) })
      res.end(text)
    }
    // The answer is decided (and recorded) now; only its bytes travel slowly.
    if (latencyMs > 0) setTimeout(write, latencyMs)
    else write()
  }
  const ok = (call: RecordedCall, res: http.ServerResponse, result: unknown, description?: string) =>
    send(call, res, 200, { ok: true, result, ...(description === undefined ? {} : { description }) })
  const fail = (call: RecordedCall, res: http.ServerResponse, code: number, description: string, parameters?: object) =>
    send(call, res, code, { ok: false, error_code: code, description, ...(parameters ? { parameters } : {}) })

  const kindOf = (update: Record<string, unknown>) => Object.keys(update).find((k) => k !== "update_id") ?? "unknown"
  const deliverable = (update: Record<string, unknown>) =>
    allowedUpdates === undefined || allowedUpdates.length === 0 || allowedUpdates.includes(kindOf(update))

  /** Drops updates of kinds not allowed, then returns up to `limit` from the head. */
  const takeBatch = (limit: number) => {
    queue = queue.filter(deliverable)
    return queue.slice(0, limit)
  }

  const releaseHeld = () => {
    if (held === undefined) return
    const batch = takeBatch(held.limit)
    if (batch.length === 0) return
    clearTimeout(held.timer)
    const { call, res } = held
    held = undefined
    ok(call, res, batch)
  }

  // -- webhook delivery ------------------------------------------------------
  let delivering = false
  const deliver = async (): Promise<void> => {
    if (delivering) return
    delivering = true
    try {
      while (!closed && webhook !== undefined) {
        const batch = takeBatch(1)
        const update = batch[0]
        if (update === undefined) return
        const target = webhook
        let status: number | "error"
        try {
          const response = await fetch(target.url, {
            method: "POST",
            headers: {
              "content-type": "application/json",
              ...(target.secretToken === undefined ? {} : { "x-telegram-bot-api-secret-token": target.secretToken })
            },
            body: JSON.stringify(update),
            signal: AbortSignal.timeout(10_000)
          })
          status = response.status
          await response.arrayBuffer().catch(() => undefined)
        } catch {
          status = "error"
        }
        const delivered = typeof status === "number" && status >= 200 && status < 300
        if (delivered) {
          queue = queue.filter((u) => u !== update)
        } else if (webhook !== undefined) {
          webhook = {
            ...webhook,
            lastErrorDate: Math.floor(Date.now() / 1000),
            lastErrorMessage: status === "error" ? "Connection refused" : `Wrong response from the webhook: ${status}`
          }
        }
        const delivery = { updateId: Number(update.update_id), status, at: Date.now() }
        deliveries.push(delivery)
        notify(deliveryWaiters, delivery)
        if (!delivered) await new Promise((resolve) => setTimeout(resolve, retryDelay))
      }
    } finally {
      delivering = false
    }
  }

  // -- chats -----------------------------------------------------------------
  const chat = (chatId: number) => {
    let state = chats.get(chatId)
    if (state === undefined) {
      state = { nextId: 1, messages: new Map() }
      chats.set(chatId, state)
    }
    return state
  }
  const messageResult = (message: StoredMessage, extra: Record<string, unknown> = {}) => ({
    message_id: message.messageId,
    from: bot,
    chat: chatOf(message.chatId),
    date: Math.floor(Date.now() / 1000),
    ...(message.text === undefined ? {} : { text: message.text }),
    ...(message.caption === undefined ? {} : { caption: message.caption }),
    ...(message.replyMarkup === undefined ? {} : { reply_markup: message.replyMarkup }),
    ...(message.threadId === undefined ? {} : { message_thread_id: message.threadId, is_topic_message: true }),
    ...repliedOf(message),
    ...extra
  })
  /** `reply_to_message` of a bot message: a user's message pushed earlier, or the bot's own. */
  const repliedOf = (message: StoredMessage): Record<string, unknown> => {
    if (message.replyTo === undefined) {
      return message.threadId === undefined
        ? {}
        : { reply_to_message: topicCreated(message.chatId, message.threadId) }
    }
    const own = chats.get(message.chatId)?.messages.get(message.replyTo)
    // Telegram sends a replied-to message one level deep: without its own reply_to_message.
    const { reply_to_message: _nested, ...fromUser } = userMessages.get(`${message.chatId}/${message.replyTo}`) ?? {}
    const replied = (Object.keys(fromUser).length > 0 ? fromUser : undefined) ??
      (own === undefined ? undefined : { ...messageResult({ ...own, replyTo: undefined }) })
    return replied === undefined ? {} : { reply_to_message: replied }
  }
  const placementOf = (params: Record<string, unknown>) => {
    const thread = params.message_thread_id
    const reply = (params.reply_parameters as { message_id?: unknown } | undefined)?.message_id
    return {
      threadId: typeof thread === "number" ? thread : undefined,
      replyTo: typeof reply === "number" ? reply : undefined
    }
  }
  const fileOf = (
    params: Record<string, unknown>,
    files: ReadonlyArray<UploadedFile>,
    field: string
  ): UploadedFile | string | undefined => {
    const uploaded = files.find((f) => f.field === field)
    if (uploaded !== undefined) return uploaded
    const value = params[field]
    // grammY uploads as `attach://<id>` references plus a separate part.
    if (typeof value === "string" && value.startsWith("attach://")) {
      return files.find((f) => f.field === value.slice("attach://".length))
    }
    return typeof value === "string" && value !== "" ? value : undefined
  }

  // -- per-chat flood control (opt-in) -----------------------------------------
  const flood = new Map<number, { times: Array<number>; pausedUntil: number; limited: number }>()
  /** Whether this call to `chatId` is over the flood limit (counting it either way). */
  const floodLimited = (chatId: number): boolean => {
    const limits = options.floodControl
    if (limits === undefined) return false
    const now = Date.now()
    const state = flood.get(chatId) ?? { times: [], pausedUntil: 0, limited: 0 }
    flood.set(chatId, state)
    if (state.pausedUntil > now) {
      state.limited++
      return true
    }
    state.times = state.times.filter((at) => at > now - 1_000)
    state.times.push(now)
    if (state.times.length <= (limits.perSecondFor?.(chatId) ?? limits.perSecond)) return false
    state.pausedUntil = now + limits.retryAfter * 1_000
    state.limited++
    return true
  }

  // -- methods ---------------------------------------------------------------
  type Handler = (call: RecordedCall, res: http.ServerResponse) => void
  const chatIdOf = (call: RecordedCall, res: http.ServerResponse): number | undefined => {
    const chatId = call.params.chat_id
    if (typeof chatId !== "number") {
      fail(call, res, 400, "Bad Request: chat not found")
      return undefined
    }
    if (blocked.has(chatId)) {
      fail(call, res, 403, "Forbidden: bot was blocked by the user")
      return undefined
    }
    if (floodLimited(chatId)) {
      const retryAfter = Math.max(1, Math.ceil(((flood.get(chatId)?.pausedUntil ?? 0) - Date.now()) / 1000))
      fail(call, res, 429, `Too Many Requests: retry after ${retryAfter}`, { retry_after: retryAfter })
      return undefined
    }
    return chatId
  }
  const findMessage = (call: RecordedCall, res: http.ServerResponse, action: "edit" | "delete") => {
    const chatId = chatIdOf(call, res)
    if (chatId === undefined) return undefined
    const message = chat(chatId).messages.get(Number(call.params.message_id))
    if (message === undefined) fail(call, res, 400, `Bad Request: message to ${action} not found`)
    return message
  }
  const sameJson = (a: unknown, b: unknown) => JSON.stringify(a ?? null) === JSON.stringify(b ?? null)

  const handlers: Record<string, Handler> = {
    getMe: (call, res) =>
      ok(call, res, {
        ...bot,
        can_join_groups: true,
        can_read_all_group_messages: false,
        supports_inline_queries: false,
        can_connect_to_business: false,
        has_main_web_app: false
      }),
    getUpdates: (call, res) => {
      if (webhook !== undefined) return fail(call, res, 409, CONFLICT_WEBHOOK)
      if (held !== undefined) {
        clearTimeout(held.timer)
        fail(held.call, held.res, 409, CONFLICT_OTHER_POLL)
        held = undefined
      }
      const { offset, limit, timeout } = call.params
      if (Array.isArray(call.params.allowed_updates)) allowedUpdates = call.params.allowed_updates as Array<string>
      if (typeof offset === "number") {
        queue = offset >= 0
          ? queue.filter((u) => Number(u.update_id) >= offset)
          : queue.slice(Math.max(0, queue.length + offset))
      }
      const max = typeof limit === "number" ? Math.min(100, Math.max(1, limit)) : 100
      const batch = takeBatch(max)
      const seconds = typeof timeout === "number" ? Math.max(0, timeout) : 0
      if (batch.length > 0 || seconds === 0) return ok(call, res, batch)
      const poll: HeldPoll = {
        call,
        res,
        limit: max,
        timer: setTimeout(() => {
          if (held === poll) {
            held = undefined
            ok(call, res, [])
          }
        }, seconds * 1000)
      }
      held = poll
      // The client gave up (aborted): forget the poll, like Telegram does.
      res.on("close", () => {
        if (held === poll) {
          clearTimeout(poll.timer)
          held = undefined
        }
      })
    },
    setWebhook: (call, res) => {
      const url = call.params.url
      if (typeof url !== "string") return fail(call, res, 400, "Bad Request: bad webhook: URL must be provided")
      if (call.params.drop_pending_updates === true) queue = []
      if (url === "") {
        webhook = undefined
        return ok(call, res, true, "Webhook was deleted")
      }
      if (!/^https?:\/\//.test(url)) return fail(call, res, 400, "Bad Request: bad webhook: Failed to resolve host")
      const secret = call.params.secret_token
      if (secret !== undefined && (typeof secret !== "string" || !/^[A-Za-z0-9_-]{1,256}$/.test(secret))) {
        return fail(call, res, 400, "Bad Request: bad webhook: secret token contains unallowed characters")
      }
      if (Array.isArray(call.params.allowed_updates)) allowedUpdates = call.params.allowed_updates as Array<string>
      webhook = {
        url,
        secretToken: secret as string | undefined,
        maxConnections: typeof call.params.max_connections === "number" ? call.params.max_connections : 40,
        allowedUpdates,
        lastErrorDate: undefined,
        lastErrorMessage: undefined
      }
      ok(call, res, true, "Webhook was set")
      void deliver()
    },
    deleteWebhook: (call, res) => {
      if (call.params.drop_pending_updates === true) queue = []
      const had = webhook !== undefined
      webhook = undefined
      ok(call, res, true, had ? "Webhook was deleted" : "Webhook is already deleted")
    },
    getWebhookInfo: (call, res) =>
      ok(call, res, {
        url: webhook?.url ?? "",
        has_custom_certificate: false,
        pending_update_count: queue.length,
        ...(webhook === undefined ? {} : {
          max_connections: webhook.maxConnections,
          ...(webhook.allowedUpdates === undefined ? {} : { allowed_updates: webhook.allowedUpdates }),
          ...(webhook.lastErrorDate === undefined
            ? {}
            : { last_error_date: webhook.lastErrorDate, last_error_message: webhook.lastErrorMessage })
        })
      }),
    setMyCommands: (call, res) => {
      if (!Array.isArray(call.params.commands))
        return fail(call, res, 400, "Bad Request: parameter \"commands\" is required")
      commands = call.params.commands
      ok(call, res, true)
    },
    sendMessage: (call, res) => {
      const chatId = chatIdOf(call, res)
      if (chatId === undefined) return
      const text = call.params.text
      if (typeof text !== "string" || text.trim() === "")
        return fail(call, res, 400, "Bad Request: message text is empty")
      if ([...text].length > 4096) return fail(call, res, 400, "Bad Request: message is too long")
      const state = chat(chatId)
      const message: StoredMessage = {
        chatId,
        messageId: state.nextId++,
        kind: "text",
        text,
        caption: undefined,
        replyMarkup: call.params.reply_markup,
        ...placementOf(call.params)
      }
      state.messages.set(message.messageId, message)
      ok(call, res, messageResult(message))
    },
    editMessageText: (call, res) => {
      if (typeof call.params.inline_message_id === "string") return ok(call, res, true)
      const message = findMessage(call, res, "edit")
      if (message === undefined) return
      const text = call.params.text
      if (typeof text !== "string" || text.trim() === "")
        return fail(call, res, 400, "Bad Request: message text is empty")
      if (message.kind !== "text") return fail(call, res, 400, "Bad Request: there is no text in the message to edit")
      if (text === message.text && sameJson(call.params.reply_markup, message.replyMarkup)) {
        return fail(call, res, 400, NOT_MODIFIED.description)
      }
      const updated = { ...message, text, replyMarkup: call.params.reply_markup }
      chat(message.chatId).messages.set(message.messageId, updated)
      ok(call, res, messageResult(updated))
    },
    editMessageReplyMarkup: (call, res) => {
      if (typeof call.params.inline_message_id === "string") return ok(call, res, true)
      const message = findMessage(call, res, "edit")
      if (message === undefined) return
      if (sameJson(call.params.reply_markup, message.replyMarkup)) return fail(call, res, 400, NOT_MODIFIED.description)
      const updated = { ...message, replyMarkup: call.params.reply_markup }
      chat(message.chatId).messages.set(message.messageId, updated)
      ok(call, res, messageResult(updated))
    },
    deleteMessage: (call, res) => {
      const message = findMessage(call, res, "delete")
      if (message === undefined) return
      chat(message.chatId).messages.delete(message.messageId)
      ok(call, res, true)
    },
    answerCallbackQuery: (call, res) => {
      const id = call.params.callback_query_id
      if (typeof id !== "string" || id === "") {
        return fail(call, res, 400, "Bad Request: query is too old and response timeout expired or query ID is invalid")
      }
      const text = call.params.text
      if (typeof text === "string" && [...text].length > 200) {
        return fail(call, res, 400, "Bad Request: MESSAGE_TOO_LONG")
      }
      answered.push(id)
      ok(call, res, true)
    },
    sendChatAction: (call, res) => {
      if (chatIdOf(call, res) === undefined) return
      if (typeof call.params.action !== "string")
        return fail(call, res, 400, "Bad Request: wrong parameter action in request")
      ok(call, res, true)
    },
    sendPhoto: (call, res) => sendMedia(call, res, "photo"),
    sendDocument: (call, res) => sendMedia(call, res, "document"),
    getFile: (call, res) => {
      const file = files.get(String(call.params.file_id))
      if (file === undefined) return fail(call, res, 400, "Bad Request: invalid file_id")
      if (file.size > BOT_DOWNLOAD_LIMIT) return fail(call, res, 400, "Bad Request: file is too big")
      ok(call, res, {
        file_id: String(call.params.file_id),
        file_unique_id: `u${String(call.params.file_id)}`,
        file_size: file.size,
        file_path: file.path
      })
    }
  }

  /** `GET /file/bot<token>/<file_path>`: the bytes of a file users sent; the token must be right. */
  const serveFile = (res: http.ServerResponse, pathname: string): boolean => {
    const match = /^\/file\/bot([^/]+)\/(.+)$/.exec(pathname)
    if (match === null) return false
    const file = match[1] === token ? [...files.values()].find((f) => f.path === match[2]) : undefined
    if (file === undefined) {
      res.writeHead(404, { "content-type": "application/json" })
      res.end(JSON.stringify({ ok: false, error_code: 404, description: "Not Found" }))
      return true
    }
    downloads.push(file.path)
    res.writeHead(200, { "content-type": "application/octet-stream", "content-length": file.bytes.length })
    res.end(file.bytes)
    return true
  }

  const sendMedia = (call: RecordedCall, res: http.ServerResponse, kind: "photo" | "document") => {
    const chatId = chatIdOf(call, res)
    if (chatId === undefined) return
    const file = fileOf(call.params, call.files, kind)
    if (file === undefined) return fail(call, res, 400, `Bad Request: there is no ${kind} in the request`)
    const caption = typeof call.params.caption === "string" ? call.params.caption : undefined
    if (caption !== undefined && [...caption].length > 1024) {
      return fail(call, res, 400, "Bad Request: message caption is too long")
    }
    const state = chat(chatId)
    const message: StoredMessage = {
      chatId,
      messageId: state.nextId++,
      kind,
      text: undefined,
      caption,
      replyMarkup: call.params.reply_markup,
      ...placementOf(call.params)
    }
    state.messages.set(message.messageId, message)
    const fileId = `file-${chatId}-${message.messageId}`
    const size = typeof file === "string" ? 100_000 : file.size
    if (typeof file !== "string" && file.bytes !== undefined) {
      files.set(fileId, { bytes: file.bytes, size, path: `photos/${fileId}.png` })
    }
    const media = kind === "photo"
      ? { photo: [{ file_id: fileId, file_unique_id: `u${fileId}`, width: 1024, height: 1024, file_size: size }] }
      : {
        document: {
          file_id: fileId,
          file_unique_id: `u${fileId}`,
          file_name: typeof file === "string" ? "file" : file.filename,
          mime_type: typeof file === "string" ? "application/octet-stream" : file.type,
          file_size: size
        }
      }
    ok(call, res, messageResult(message, media))
  }

  // -- request parsing -------------------------------------------------------
  const readParams = async (req: http.IncomingMessage, url: URL) => {
    const chunks: Array<Buffer> = []
    for await (const chunk of req) chunks.push(chunk as Buffer)
    const body = Buffer.concat(chunks)
    const type = (req.headers["content-type"] ?? "").toLowerCase()
    const params: Record<string, unknown> = {}
    const files: Array<UploadedFile> = []
    let transport: RecordedCall["transport"] = "query"
    for (const [key, value] of url.searchParams) params[key] = coerce(key, value)
    if (body.length > 0 && type.startsWith("application/json")) {
      transport = "json"
      Object.assign(params, JSON.parse(body.toString("utf8")))
    } else if (
      body.length > 0 &&
      (type.startsWith("multipart/form-data") || type.startsWith("application/x-www-form-urlencoded"))
    ) {
      transport = type.startsWith("multipart") ? "multipart" : "form"
      const request = new Request("http://fake.local/", {
        method: "POST",
        headers: { "content-type": req.headers["content-type"]! },
        body
      })
      // The fake parses small uploads from our own tests; the deprecation warns about untrusted input.
      // oxlint-disable-next-line typescript/no-deprecated
      const form = await request.formData()
      for (const [key, value] of form) {
        if (typeof value === "string") params[key] = coerce(key, value)
        else {
          const bytes = new Uint8Array(await value.arrayBuffer())
          files.push({ field: key, filename: value.name, type: value.type, size: value.size, bytes })
        }
      }
    }
    return { params, files, transport }
  }

  const page = makeChatPage({
    nextMessageId: (chatId) => chat(chatId).nextId++,
    botMessages: (chatId) => [...(chats.get(chatId)?.messages.values() ?? [])],
    chatIds: () => [...chats.keys()],
    pushUpdate: (update) => shape.pushUpdate(update),
    pressButton: (press) => shape.pressButton(press),
    addFile: (bytes) => shape.addFile(bytes),
    repliedMessage: (chatId, messageId) => {
      const { reply_to_message: _nested, ...fromUser } = userMessages.get(`${chatId}/${messageId}`) ?? {}
      if (Object.keys(fromUser).length > 0) return fromUser
      const own = chats.get(chatId)?.messages.get(messageId)
      if (own === undefined) return undefined
      const fileId = `file-${chatId}-${messageId}`
      // Like Telegram, a replied-to picture carries its file, so a reply to it can edit it.
      const photo = [{ file_id: fileId, file_unique_id: `u${fileId}`, width: 1024, height: 1024 }]
      return messageResult({ ...own, replyTo: undefined }, own.kind === "photo" ? { photo } : {})
    }
  })

  const server = http.createServer((req, res) => {
    busy++
    activity++
    let settled = false
    const settle = () => {
      if (settled) return
      settled = true
      busy--
      activity++
    }
    res.on("finish", settle)
    res.on("close", settle)
    void (async () => {
      const url = new URL(req.url ?? "/", "http://127.0.0.1")
      if (req.method === "GET" && serveFile(res, url.pathname)) return
      if (url.pathname.startsWith("/chat/")) {
        // The page's long polls are held for seconds: they must not keep `idle()` waiting.
        settle()
        await page.serve(req, res, url)
        return
      }
      if (options.routes !== undefined && (await options.routes(req, res, url))) return
      const match = /^\/bot([^/]+)\/([A-Za-z]+)$/.exec(url.pathname)
      let parsed: Awaited<ReturnType<typeof readParams>>
      try {
        parsed = await readParams(req, url)
      } catch {
        return send(undefined, res, 400, {
          ok: false,
          error_code: 400,
          description: "Bad Request: can't parse request"
        })
      }
      const call: RecordedCall = {
        seq: calls.length + 1,
        method: match?.[2] ?? url.pathname,
        params: parsed.params,
        files: parsed.files,
        transport: parsed.transport,
        at: Date.now()
      }
      calls.push(call)
      res.on("close", () => {
        if (!res.writableEnded) {
          call.aborted = true
          notify(abortWaiters, call)
        }
      })
      if (match === null) return fail(call, res, 404, "Not Found")
      if (match[1] !== token) return fail(call, res, 401, "Unauthorized")
      const handle = () => {
        const handler = handlers[call.method]
        if (handler === undefined) fail(call, res, 404, "Not Found")
        else handler(call, res)
        if (call.response?.status === 200) {
          const file = call.files.find((f) => f.bytes !== undefined)
          page.noteCall(
            call.method,
            call.params,
            (call.response.body as { result?: unknown }).result,
            file === undefined ? undefined : { bytes: file.bytes!, type: file.type || "image/png", name: file.filename }
          )
        }
      }
      const injected = failures.get(call.method)?.shift()
      if (injected !== undefined) {
        switch (injected._tag) {
          case "Error":
            fail(call, res, injected.code, injected.description, injected.parameters)
            break
          case "Hang":
            settle()
            hung.add(res)
            res.on("close", () => hung.delete(res))
            break
          case "Disconnect":
            req.socket.destroy()
            break
          case "Raw":
            send(call, res, injected.status, injected.body)
            break
          case "Delayed":
            settle()
            hung.add(res)
            void injected.until.then(() => {
              hung.delete(res)
              activity++
              if (!res.destroyed) handle()
            })
            break
          case "NotJson":
            call.response = { status: 502, body: "<html>Bad Gateway</html>" }
            res.writeHead(502, { "content-type": "text/html" })
            res.end("<html><body><h1>502 Bad Gateway</h1></body></html>")
            break
        }
      } else {
        handle()
      }
      notify(callWaiters, call)
      for (const listener of callListeners) listener(call)
    })()
  })
  server.on("connection", (socket) => {
    sockets.add(socket)
    socket.on("close", () => sockets.delete(socket))
  })
  await new Promise<void>((resolve, reject) => {
    // A taken port (a fixed `port`) fails the start instead of crashing the process.
    server.once("error", reject)
    server.listen(options.port ?? 0, "127.0.0.1", () => {
      server.off("error", reject)
      resolve()
    })
  })
  const port = (server.address() as AddressInfo).port
  const apiRoot = `http://127.0.0.1:${port}`

  const waitFor = <A>(
    waiters: Set<Waiter<A>>,
    existing: A | undefined,
    match: (value: A) => boolean,
    timeoutMs: number,
    what: string
  ): Effect.Effect<A, FakeTelegramTimeout> =>
    existing !== undefined ? Effect.succeed(existing) : Effect.callback<A, FakeTelegramTimeout>((resume) => {
      const waiter: Waiter<A> = {
        match,
        resolve: (value) => {
          clearTimeout(timer)
          resume(Effect.succeed(value))
        }
      }
      const timer = setTimeout(() => {
        waiters.delete(waiter)
        resume(Effect.fail(new FakeTelegramTimeout({ message: `FakeTelegram: no ${what} within ${timeoutMs} ms` })))
      }, timeoutMs)
      waiters.add(waiter)
      return Effect.sync(() => {
        clearTimeout(timer)
        waiters.delete(waiter)
      })
    })

  const shape: FakeTelegramShape & { close: () => Promise<void> } = {
    apiRoot,
    token,
    env: { TELEGRAM_API_ROOT: apiRoot, TELEGRAM_BOT_TOKEN: token },
    calls: (method) => (method === undefined ? [...calls] : calls.filter((c) => c.method === method)),
    mark: () => calls.length,
    onCall: (listener) => {
      callListeners.add(listener)
      return () => void callListeners.delete(listener)
    },
    awaitCall: (method, where = () => true, opts = {}) => {
      const after = opts.after ?? 0
      const match = (c: RecordedCall) => c.seq > after && c.method === method && where(c)
      return Effect.suspend(() =>
        waitFor(callWaiters, calls.find(match), match, opts.timeoutMs ?? 5000, `${method} call`)
      )
    },
    awaitAborted: (call, opts = {}) =>
      Effect.suspend(() =>
        waitFor(
          abortWaiters,
          call.aborted === true ? call : undefined,
          (c) => c === call,
          opts.timeoutMs ?? 5000,
          `abort of ${call.method} call ${call.seq}`
        )
      ),
    pushUpdate: (update) => {
      const given = update.update_id
      const updateId = typeof given === "number" ? given : nextUpdateId++
      if (updateId >= nextUpdateId) nextUpdateId = updateId + 1
      const message = update.message as { chat?: { id?: unknown }; message_id?: unknown } | undefined
      if (message !== undefined && typeof message.message_id === "number") {
        userMessages.set(`${String(message.chat?.id)}/${message.message_id}`, message)
      }
      queue.push({ update_id: updateId, ...update })
      queue.sort((a, b) => Number(a.update_id) - Number(b.update_id))
      releaseHeld()
      void deliver()
      return updateId
    },
    pressButton: (press) => {
      const stored = chats.get(press.chatId)?.messages.get(press.messageId)
      if (stored === undefined) throw new Error(`FakeTelegram: no message ${press.messageId} in chat ${press.chatId}`)
      return shape.pushUpdate({
        callback_query: {
          id: press.id ?? `cbq-${nextCallbackId++}`,
          from: user(press.userId, press.languageCode),
          message: messageResult(stored),
          chat_instance: `ci-${press.chatId}`,
          data: press.data
        }
      })
    },
    pendingUpdates: () => [...queue],
    addFile: (bytes, fileOptions) => {
      const fileId = `user-file-${files.size + 1}`
      files.set(fileId, { bytes, size: fileOptions?.size ?? bytes.length, path: `photos/file_${files.size + 1}.jpg` })
      return fileId
    },
    fileDownloads: () => [...downloads],
    page,
    failNext: (method, injected, times = 1) => {
      const list = failures.get(method) ?? []
      for (let i = 0; i < times; i++) list.push(injected)
      failures.set(method, list)
    },
    blockChat: (chatId) => void blocked.add(chatId),
    unblockChat: (chatId) => void blocked.delete(chatId),
    webhook: () => webhook,
    setWebhookDirectly: (url, secretToken) => {
      if (url === "") {
        webhook = undefined
        return
      }
      webhook = {
        url,
        secretToken,
        maxConnections: 40,
        allowedUpdates,
        lastErrorDate: undefined,
        lastErrorMessage: undefined
      }
      if (held !== undefined) {
        clearTimeout(held.timer)
        fail(held.call, held.res, 409, CONFLICT_WEBHOOK)
        held = undefined
      }
      void deliver()
    },
    deliveries: () => [...deliveries],
    awaitDelivery: (where, opts = {}) =>
      Effect.suspend(() => {
        const after = opts.after ?? 0
        const match = (d: WebhookDelivery) => deliveries.indexOf(d) >= after && where(d)
        return waitFor(deliveryWaiters, deliveries.find(match), match, opts.timeoutMs ?? 5000, "webhook delivery")
      }),
    messages: (chatId) => [...(chats.get(chatId)?.messages.values() ?? [])],
    answeredCallbackQueries: () => [...answered],
    commands: () => commands,
    heldPolls: () => (held === undefined ? 0 : 1),
    floodLimited: (chatId) => flood.get(chatId)?.limited ?? 0,
    idle: async (quietMs = 15, timeoutMs = 2_000) => {
      const deadline = Date.now() + timeoutMs
      let seen = -1
      while (Date.now() < deadline) {
        const quiet = busy - (held === undefined ? 0 : 1) <= 0
        if (quiet && activity === seen) return
        seen = quiet ? activity : -1
        await new Promise((resolve) => setTimeout(resolve, quietMs))
      }
    },
    close: async () => {
      closed = true
      if (held !== undefined) clearTimeout(held.timer)
      held = undefined
      for (const res of hung) res.destroy()
      for (const socket of sockets) socket.destroy()
      await new Promise<void>((resolve) => server.close(() => resolve()))
    }
  }
  return shape
}

/** The fake as a service, for `layer(FakeTelegram.layer())` style tests. */
export class FakeTelegram extends Context.Service<FakeTelegram, FakeTelegramShape>()("test/FakeTelegram") {
  static readonly layer = (options?: FakeTelegramOptions) => Layer.effect(FakeTelegram, make(options))
}
