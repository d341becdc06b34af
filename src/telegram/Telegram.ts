/**
 * The Telegram Bot API, as the rest of the bot uses it: grammY's `Api` client
 * (its request building, multipart uploads and parameter types) wrapped in
 * typed Effect errors, timeouts, interruption and the Bot API's quirks.
 *
 * - 429: waits `retry_after` (on the Effect clock) and retries, at most
 *   `RATE_LIMIT_MAX_WAITS` times and never longer than `RATE_LIMIT_MAX_WAIT`
 *   at once; then `TelegramRateLimited`.
 * - 403 (blocked, deactivated, kicked) and 400 "chat not found": the chat is
 *   recorded as blocked in PostgreSQL and later calls to it fail with
 *   `TelegramChatBlocked` without touching the network, until an update from
 *   that chat arrives and `markUnblocked` clears the flag.
 * - 400 "message is not modified" on an edit is success.
 * - Every call has a timeout and is cancelled (AbortSignal) when interrupted.
 *
 * grammY errors carry the token in URLs (`HttpError.error.message` is the
 * node-fetch text with `/bot<token>/`). Nothing from them reaches a message
 * here except Telegram's own `description` and well-known error codes; the
 * log redactor is the last line of defence, not the first.
 */
import { Context, DateTime, Duration, Effect, Layer, Option, Predicate, Redacted, Schedule, Schema } from "effect"
import { SqlClient } from "effect/sql/SqlClient"
import { createHash } from "node:crypto"
import { Api, GrammyError, HttpError } from "grammy"
import type { Message, Opts, UserFromGetMe, WebhookInfo } from "grammy/types"
import { AppConfig } from "../platform/AppConfig.ts"
import * as Metrics from "../platform/Metrics.ts"
import { UpdateEnvelope } from "./TelegramUpdate.ts"

// ---------------------------------------------------------------------------
// Errors

/** 429 that outlasted the retry policy (or asked for a wait longer than we allow). */
export class TelegramRateLimited extends Schema.TaggedError<TelegramRateLimited>()("TelegramRateLimited", {
  method: Schema.String,
  retryAfterSeconds: Schema.Number,
  message: Schema.String
}) {}

/** The chat cannot be written to: the user blocked the bot, was deleted, or the bot left the chat. */
export class TelegramChatBlocked extends Schema.TaggedError<TelegramChatBlocked>()("TelegramChatBlocked", {
  method: Schema.String,
  chatId: Schema.Number,
  description: Schema.String,
  message: Schema.String
}) {}

/** 400: the request was wrong (bad parameters, message to edit not found, query too old…). */
export class TelegramBadRequest extends Schema.TaggedError<TelegramBadRequest>()("TelegramBadRequest", {
  method: Schema.String,
  description: Schema.String,
  message: Schema.String
}) {}

/** 409: another getUpdates consumer, or getUpdates while a webhook is set. */
export class TelegramConflict extends Schema.TaggedError<TelegramConflict>()("TelegramConflict", {
  method: Schema.String,
  description: Schema.String,
  message: Schema.String
}) {}

/** 401: the bot token is wrong or was revoked. */
export class TelegramUnauthorized extends Schema.TaggedError<TelegramUnauthorized>()("TelegramUnauthorized", {
  method: Schema.String,
  message: Schema.String
}) {}

/** 5xx from the Bot API. */
export class TelegramServerError extends Schema.TaggedError<TelegramServerError>()("TelegramServerError", {
  method: Schema.String,
  status: Schema.Number,
  description: Schema.String,
  message: Schema.String
}) {}

/** Any other `ok: false` answer (404 for an unknown method, 403 outside a chat…). */
export class TelegramApiError extends Schema.TaggedError<TelegramApiError>()("TelegramApiError", {
  method: Schema.String,
  status: Schema.Number,
  description: Schema.String,
  message: Schema.String
}) {}

/** No usable answer: connection failed, timed out, or the body was not Bot API JSON. */
export class TelegramNetworkError extends Schema.TaggedError<TelegramNetworkError>()("TelegramNetworkError", {
  method: Schema.String,
  reason: Schema.String,
  message: Schema.String
}) {}

export type TelegramError =
  | TelegramRateLimited
  | TelegramChatBlocked
  | TelegramBadRequest
  | TelegramConflict
  | TelegramUnauthorized
  | TelegramServerError
  | TelegramApiError
  | TelegramNetworkError

const networkError = (method: string, reason: string) =>
  new TelegramNetworkError({ method, reason, message: `Telegram ${method} failed: ${reason}` })

/** A network failure as a short reason: an errno code or node-fetch's error type, never its message. */
const describeNetworkFailure = (cause: unknown): string => {
  if (Predicate.isObject(cause)) {
    const record = cause as Record<string, unknown>
    if (record.name === "AbortError") return "request aborted"
    if (record.type === "invalid-json") return "the answer was not Bot API JSON"
    for (const key of ["code", "errno", "type"]) {
      const value = record[key]
      if (typeof value === "string" && /^[A-Za-z0-9_-]{1,40}$/.test(value)) return `network error ${value}`
    }
  }
  return "network error"
}

/** Descriptions that mean the chat cannot receive anything from the bot any more. */
const CHAT_GONE_400 = /chat not found|user not found|have no rights to send|not enough rights to send/i

const fromGrammy = (method: string, chatId: number | undefined, error: unknown): TelegramError => {
  if (error instanceof GrammyError) {
    const status = error.error_code
    const description = String(error.description)
    const what = `Telegram ${method} failed (${status}: ${description})`
    if (status === 429) {
      const retryAfter = Number(error.parameters?.retry_after)
      return new TelegramRateLimited({
        method,
        retryAfterSeconds: Number.isFinite(retryAfter) && retryAfter >= 0 ? retryAfter : 1,
        message: what
      })
    }
    if (status === 401) return new TelegramUnauthorized({ method, message: `${what}: check TELEGRAM_BOT_TOKEN` })
    if (chatId !== undefined && (status === 403 || (status === 400 && CHAT_GONE_400.test(description)))) {
      return new TelegramChatBlocked({ method, chatId, description, message: what })
    }
    if (status === 400) return new TelegramBadRequest({ method, description, message: what })
    if (status === 409) return new TelegramConflict({ method, description, message: what })
    if (status >= 500) return new TelegramServerError({ method, status, description, message: what })
    return new TelegramApiError({ method, status, description, message: what })
  }
  if (error instanceof HttpError) return networkError(method, describeNetworkFailure(error.error))
  return networkError(method, describeNetworkFailure(error))
}

// ---------------------------------------------------------------------------
// Policies

/** At most this many waits on 429 per call. */
export const RATE_LIMIT_MAX_WAITS = 3
/** A 429 asking for a longer wait than this fails at once instead of holding the caller. */
export const RATE_LIMIT_MAX_WAIT = Duration.seconds(30)

/** 429 → wait `retry_after`, at most `RATE_LIMIT_MAX_WAITS` times; anything else is not retried here. */
export const rateLimitPolicy = Schedule.recurs(RATE_LIMIT_MAX_WAITS).pipe(
  Schedule.setInputType<TelegramError>(),
  Schedule.while(({ input }) =>
    input._tag === "TelegramRateLimited" &&
    Duration.isLessThanOrEqualTo(Duration.seconds(input.retryAfterSeconds), RATE_LIMIT_MAX_WAIT)
  ),
  Schedule.modifyDelay(({ input }) =>
    Effect.succeed(Duration.seconds(input._tag === "TelegramRateLimited" ? input.retryAfterSeconds : 0))
  ),
  Schedule.tap(({ input, attempt }) =>
    Effect.logWarning(
      `[TELEGRAM] 429 on ${input.method}: waiting ${
        input._tag === "TelegramRateLimited" ? input.retryAfterSeconds : 0
      } s (wait ${attempt} of ${RATE_LIMIT_MAX_WAITS})`
    )
  )
)

/** Extra time a long poll gets beyond its own `timeout`. */
export const LONG_POLL_MARGIN = Duration.seconds(10)
/** Uploads (sendPhoto/sendDocument with a file) get at least this long. */
export const UPLOAD_TIMEOUT = Duration.minutes(2)

// ---------------------------------------------------------------------------
// Results, decoded to the fields the bot relies on (everything else kept)

const open = [Schema.Record(Schema.String, Schema.Unknown)] as const
const MessageResult = Schema.StructWithRest(
  Schema.Struct({
    message_id: Schema.Int,
    date: Schema.Int,
    chat: Schema.StructWithRest(Schema.Struct({ id: Schema.Int }), open)
  }),
  open
)
const TrueResult = Schema.Literal(true)
const EditResult = Schema.Union([MessageResult, TrueResult])
const BotResult = Schema.StructWithRest(
  Schema.Struct({ id: Schema.Int, is_bot: Schema.Literal(true), first_name: Schema.String, username: Schema.String }),
  open
)
const WebhookInfoResult = Schema.StructWithRest(
  Schema.Struct({
    url: Schema.optionalKey(Schema.String),
    has_custom_certificate: Schema.Boolean,
    pending_update_count: Schema.Int,
    max_connections: Schema.optionalKey(Schema.Int),
    allowed_updates: Schema.optionalKey(Schema.Array(Schema.String)),
    last_error_date: Schema.optionalKey(Schema.Int),
    last_error_message: Schema.optionalKey(Schema.String)
  }),
  open
)
/** One malformed element must not stall polling: it is skipped (and logged), the rest is kept. */
const UpdatesResult = Schema.Array(Schema.Unknown)
const decodeEnvelope = Schema.decodeUnknownOption(UpdateEnvelope)

// ---------------------------------------------------------------------------
// Storage: blocked chats and the webhook we last set

/** Migration 0002: chats that blocked the bot, and the applied webhook's fingerprint. */
export const migration = Effect.gen(function*() {
  const sql = yield* SqlClient
  yield* sql`
    CREATE TABLE telegram_chats (
      chat_id bigint PRIMARY KEY,
      blocked_at timestamptz,
      blocked_reason text,
      updated_at timestamptz NOT NULL
    )`
  yield* sql`
    CREATE TABLE telegram_webhook (
      id smallint PRIMARY KEY CHECK (id = 1),
      fingerprint text NOT NULL,
      set_at timestamptz NOT NULL
    )`
})

/** What the bot wants Telegram's webhook to be. */
export interface WebhookSpec {
  readonly url: string
  readonly secretToken: Redacted.Redacted<string>
  readonly allowedUpdates: AllowedUpdates
  readonly maxConnections: number
}

export type AllowedUpdates = NonNullable<Opts<"setWebhook">["allowed_updates"]>

/**
 * Telegram never shows the `secret_token` back, so a changed secret is only
 * visible through a fingerprint of what we last set. Salted with the bot token
 * so the stored value says nothing about the secret.
 */
const fingerprintOf = (spec: WebhookSpec, botToken: Redacted.Redacted<string>): string =>
  createHash("sha256")
    .update(
      JSON.stringify([
        Redacted.value(botToken),
        spec.url,
        Redacted.value(spec.secretToken),
        [...spec.allowedUpdates].sort(),
        spec.maxConnections
      ])
    )
    .digest("hex")

const sameSet = (a: ReadonlyArray<string>, b: ReadonlyArray<string>): boolean =>
  a.length === b.length && a.every((x) => b.includes(x))

// ---------------------------------------------------------------------------
// The service

type EditText = Opts<"editMessageText">
type EditMarkup = Opts<"editMessageReplyMarkup">

export interface TelegramShape {
  readonly getMe: Effect.Effect<UserFromGetMe, TelegramError>
  /** Long polling; the call's timeout is the poll's `timeout` plus `LONG_POLL_MARGIN`. */
  readonly getUpdates: (params: Opts<"getUpdates">) => Effect.Effect<ReadonlyArray<UpdateEnvelope>, TelegramError>
  readonly setWebhook: (params: Opts<"setWebhook">) => Effect.Effect<void, TelegramError>
  readonly deleteWebhook: (params?: Opts<"deleteWebhook">) => Effect.Effect<void, TelegramError>
  readonly getWebhookInfo: Effect.Effect<WebhookInfo, TelegramError>
  /**
   * Makes the webhook match `spec`, calling setWebhook only when getWebhookInfo
   * or the stored fingerprint (secret changes) say it differs.
   */
  readonly ensureWebhook: (spec: WebhookSpec) => Effect.Effect<"unchanged" | "set", TelegramError>
  readonly setMyCommands: (params: Opts<"setMyCommands">) => Effect.Effect<void, TelegramError>
  readonly sendMessage: (params: Opts<"sendMessage">) => Effect.Effect<Message.TextMessage, TelegramError>
  /** "message is not modified" counts as success. */
  readonly editMessageText: (params: EditText) => Effect.Effect<void, TelegramError>
  /** "message is not modified" counts as success. */
  readonly editMessageReplyMarkup: (params: EditMarkup) => Effect.Effect<void, TelegramError>
  readonly answerCallbackQuery: (params: Opts<"answerCallbackQuery">) => Effect.Effect<void, TelegramError>
  readonly sendPhoto: (params: Opts<"sendPhoto">) => Effect.Effect<Message.PhotoMessage, TelegramError>
  readonly sendDocument: (params: Opts<"sendDocument">) => Effect.Effect<Message.DocumentMessage, TelegramError>
  readonly sendChatAction: (params: Opts<"sendChatAction">) => Effect.Effect<void, TelegramError>
  readonly deleteMessage: (params: Opts<"deleteMessage">) => Effect.Effect<void, TelegramError>
  /** Whether sends to this chat are short-circuited. A database failure reads as "not blocked". */
  readonly isBlocked: (chatId: number) => Effect.Effect<boolean>
  /**
   * Clears the blocked flag: an update from the chat proves it can be written
   * to again. Call it before handling such an update. Never fails (logged).
   */
  readonly markUnblocked: (chatIds: number | ReadonlyArray<number>) => Effect.Effect<void>
}

/** Numeric `chat_id` of a call, for blocked tracking; usernames (`@channel`) are not tracked. */
const numericChat = (params: { readonly chat_id?: number | string | undefined }): number | undefined =>
  typeof params.chat_id === "number" && Number.isSafeInteger(params.chat_id) ? params.chat_id : undefined

const NOT_MODIFIED = /message is not modified/i

const make = Effect.gen(function*() {
  const config = yield* AppConfig
  const sql = yield* SqlClient
  // grammY's own timer stays out of the way: our Effect timeout governs each call.
  const api = new Api(Redacted.value(config.telegramBotToken), {
    apiRoot: config.telegramApiRoot,
    timeoutSeconds: 3600
  })
  const raw = api.raw as unknown as Record<string, (...args: ReadonlyArray<unknown>) => Promise<unknown>>

  const decodeResult = <S extends Schema.Decoder<unknown>>(method: string, schema: S) => (value: unknown) =>
    Schema.decodeUnknownEffect(schema)(value).pipe(
      Effect.mapError(() => networkError(method, "the answer did not have the documented shape"))
    ) as Effect.Effect<S["Type"], TelegramNetworkError>

  const isBlocked = (chatId: number): Effect.Effect<boolean> =>
    sql<{ blocked: boolean }>`
      SELECT blocked_at IS NOT NULL AS blocked FROM telegram_chats WHERE chat_id = ${chatId}`.pipe(
      Effect.map((rows) => rows[0]?.blocked === true),
      Effect.timeout("2 seconds"),
      Effect.catchCause(() => Effect.succeed(false))
    )

  const markBlocked = (error: TelegramChatBlocked) =>
    Effect.gen(function*() {
      const now = DateTime.toDateUtc(yield* DateTime.now)
      yield* sql`
        INSERT INTO telegram_chats (chat_id, blocked_at, blocked_reason, updated_at)
        VALUES (${error.chatId}, ${now}, ${error.description}, ${now})
        ON CONFLICT (chat_id) DO UPDATE
          SET blocked_at = EXCLUDED.blocked_at, blocked_reason = EXCLUDED.blocked_reason, updated_at = EXCLUDED.updated_at`
      yield* Effect.logWarning(`[TELEGRAM] chat ${error.chatId} marked blocked: ${error.description}`)
    }).pipe(
      Effect.timeout("5 seconds"),
      Effect.catchCause(() => Effect.logWarning(`[TELEGRAM] could not record chat ${error.chatId} as blocked`))
    )

  const markUnblocked = (chatIds: number | ReadonlyArray<number>): Effect.Effect<void> => {
    const ids = (typeof chatIds === "number" ? [chatIds] : [...new Set(chatIds)]).filter(Number.isSafeInteger)
    if (ids.length === 0) return Effect.void
    return Effect.gen(function*() {
      const now = DateTime.toDateUtc(yield* DateTime.now)
      const cleared = yield* sql<{ chat_id: bigint }>`
        UPDATE telegram_chats SET blocked_at = NULL, blocked_reason = NULL, updated_at = ${now}
        WHERE chat_id = ANY(${ids}) AND blocked_at IS NOT NULL
        RETURNING chat_id`
      for (const row of cleared) yield* Effect.logInfo(`[TELEGRAM] chat ${row.chat_id} unblocked (an update arrived from it)`)
    }).pipe(
      Effect.timeout("5 seconds"),
      Effect.catchCause(() => Effect.logWarning(`[TELEGRAM] could not clear the blocked flag of ${ids.length} chat(s)`))
    )
  }

  /**
   * One Bot API call: short-circuit for blocked chats, timeout, abort on
   * interruption, typed errors, decoded result, 429 retries. Every request
   * sent is counted in `zimage_telegram_calls_total{method,result}` (each 429
   * retry is a request of its own; a call skipped for a blocked chat is not).
   */
  const call = <S extends Schema.Decoder<unknown>>(
    method: string,
    payload: object | undefined,
    options: { readonly result: S; readonly timeout: Duration.Duration; readonly chatId?: number | undefined }
  ): Effect.Effect<S["Type"], TelegramError> => {
    const { chatId } = options
    const request = Effect.tryPromise({
      try: (signal) => payload === undefined ? raw[method]!(signal) : raw[method]!(payload, signal),
      catch: (error) => fromGrammy(method, chatId, error)
    }).pipe(
      Effect.timeoutOrElse({
        duration: options.timeout,
        orElse: () => Effect.fail(networkError(method, `no answer within ${Duration.format(options.timeout)}`))
      }),
      Effect.flatMap(decodeResult(method, options.result)),
      Effect.onExit(Metrics.countExit(Metrics.telegramCalls, method, "Telegram")),
      Effect.retry(rateLimitPolicy),
      Effect.tapError((error) => error._tag === "TelegramChatBlocked" ? markBlocked(error) : Effect.void)
    )
    if (chatId === undefined) return request
    return Effect.flatMap(isBlocked(chatId), (blocked) =>
      blocked
        ? Effect.fail(
          new TelegramChatBlocked({
            method,
            chatId,
            description: "the chat is marked as blocked",
            message: `Telegram ${method} skipped: chat ${chatId} is marked as blocked`
          })
        )
        : request)
  }

  const timeout = config.telegramRequestTimeout
  const uploadTimeout = Duration.max(timeout, UPLOAD_TIMEOUT)
  const hasUpload = (value: unknown) => value !== undefined && typeof value !== "string"

  const asVoid = <A, E>(effect: Effect.Effect<A, E>) => Effect.asVoid(effect)
  const ignoreNotModified = (effect: Effect.Effect<unknown, TelegramError>): Effect.Effect<void, TelegramError> =>
    effect.pipe(
      Effect.asVoid,
      Effect.catchIf(
        (error): error is TelegramBadRequest => error._tag === "TelegramBadRequest" && NOT_MODIFIED.test(error.description),
        () => Effect.void
      )
    )

  const getWebhookInfo = call("getWebhookInfo", undefined, { result: WebhookInfoResult, timeout }).pipe(
    Effect.map((info) => info as unknown as WebhookInfo),
    Effect.withSpan("Telegram.getWebhookInfo")
  )
  const setWebhook = (params: Opts<"setWebhook">) =>
    asVoid(call("setWebhook", params, { result: TrueResult, timeout })).pipe(Effect.withSpan("Telegram.setWebhook"))

  const ensureWebhook = Effect.fn("Telegram.ensureWebhook")(function*(spec: WebhookSpec) {
    const fingerprint = fingerprintOf(spec, config.telegramBotToken)
    const info = yield* getWebhookInfo
    const stored = yield* sql<{ fingerprint: string }>`SELECT fingerprint FROM telegram_webhook WHERE id = 1`.pipe(
      Effect.map((rows) => Option.fromNullishOr(rows[0]?.fingerprint)),
      Effect.catchCause(() => Effect.succeed(Option.none<string>()))
    )
    const matches = info.url === spec.url &&
      info.max_connections === spec.maxConnections &&
      sameSet(info.allowed_updates ?? [], spec.allowedUpdates) &&
      Option.contains(stored, fingerprint)
    if (matches) return "unchanged" as const
    yield* setWebhook({
      url: spec.url,
      secret_token: Redacted.value(spec.secretToken),
      allowed_updates: spec.allowedUpdates,
      max_connections: spec.maxConnections,
      drop_pending_updates: false
    })
    const now = DateTime.toDateUtc(yield* DateTime.now)
    yield* sql`
      INSERT INTO telegram_webhook (id, fingerprint, set_at) VALUES (1, ${fingerprint}, ${now})
      ON CONFLICT (id) DO UPDATE SET fingerprint = EXCLUDED.fingerprint, set_at = EXCLUDED.set_at`.pipe(
      Effect.catchCause(() =>
        Effect.logWarning("[TELEGRAM] webhook set, but its fingerprint could not be stored (it will be set again)")
      )
    )
    return "set" as const
  })

  return Telegram.of({
    getMe: call("getMe", undefined, { result: BotResult, timeout }).pipe(
      Effect.map((me) => me as unknown as UserFromGetMe),
      Effect.withSpan("Telegram.getMe")
    ),
    getUpdates: (params) =>
      call("getUpdates", params, {
        result: UpdatesResult,
        timeout: Duration.sum(Duration.seconds(params.timeout ?? 0), LONG_POLL_MARGIN)
      }).pipe(
        Effect.flatMap((elements) => {
          const updates = elements.flatMap((element) => Option.toArray(decodeEnvelope(element)))
          return updates.length === elements.length
            ? Effect.succeed(updates)
            : Effect.logWarning(
              `[TELEGRAM] getUpdates returned ${elements.length - updates.length} element(s) without an integer update_id; skipped`
            ).pipe(Effect.as(updates))
        }),
        Effect.withSpan("Telegram.getUpdates")
      ),
    setWebhook,
    deleteWebhook: (params) =>
      asVoid(call("deleteWebhook", params ?? {}, { result: TrueResult, timeout })).pipe(
        Effect.withSpan("Telegram.deleteWebhook")
      ),
    getWebhookInfo,
    ensureWebhook,
    setMyCommands: (params) =>
      asVoid(call("setMyCommands", params, { result: TrueResult, timeout })).pipe(
        Effect.withSpan("Telegram.setMyCommands")
      ),
    sendMessage: (params) =>
      call("sendMessage", params, { result: MessageResult, timeout, chatId: numericChat(params) }).pipe(
        Effect.map((message) => message as unknown as Message.TextMessage),
        Effect.withSpan("Telegram.sendMessage")
      ),
    editMessageText: (params) =>
      ignoreNotModified(call("editMessageText", params, { result: EditResult, timeout, chatId: numericChat(params) }))
        .pipe(Effect.withSpan("Telegram.editMessageText")),
    editMessageReplyMarkup: (params) =>
      ignoreNotModified(
        call("editMessageReplyMarkup", params, { result: EditResult, timeout, chatId: numericChat(params) })
      ).pipe(Effect.withSpan("Telegram.editMessageReplyMarkup")),
    answerCallbackQuery: (params) =>
      asVoid(call("answerCallbackQuery", params, { result: TrueResult, timeout })).pipe(
        Effect.withSpan("Telegram.answerCallbackQuery")
      ),
    sendPhoto: (params) =>
      call("sendPhoto", params, {
        result: MessageResult,
        timeout: hasUpload(params.photo) ? uploadTimeout : timeout,
        chatId: numericChat(params)
      }).pipe(
        Effect.map((message) => message as unknown as Message.PhotoMessage),
        Effect.withSpan("Telegram.sendPhoto")
      ),
    sendDocument: (params) =>
      call("sendDocument", params, {
        result: MessageResult,
        timeout: hasUpload(params.document) ? uploadTimeout : timeout,
        chatId: numericChat(params)
      }).pipe(
        Effect.map((message) => message as unknown as Message.DocumentMessage),
        Effect.withSpan("Telegram.sendDocument")
      ),
    sendChatAction: (params) =>
      asVoid(call("sendChatAction", params, { result: TrueResult, timeout, chatId: numericChat(params) })).pipe(
        Effect.withSpan("Telegram.sendChatAction")
      ),
    deleteMessage: (params) =>
      asVoid(call("deleteMessage", params, { result: TrueResult, timeout, chatId: numericChat(params) })).pipe(
        Effect.withSpan("Telegram.deleteMessage")
      ),
    isBlocked,
    markUnblocked
  })
})

export class Telegram extends Context.Service<Telegram, TelegramShape>()("zimage-bot/Telegram") {
  /** Needs `AppConfig` and `SqlClient` (migration 0002 applied). */
  static readonly layer = Layer.effect(Telegram, make)
}
