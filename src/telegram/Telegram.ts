/**
 * The Telegram Bot API, as the rest of the bot uses it: grammY's `Api` client
 * (its request building, multipart uploads and parameter types) wrapped in
 * typed Effect errors, timeouts, interruption and the Bot API's quirks.
 *
 * - Telegram's flood limits: sends are paced per chat and a 429 pauses the
 *   chat (or every chat) before the call is retried (`SendGate.ts`); a wait
 *   longer than the caller allows is `TelegramRateLimited`.
 * - 403 (blocked, deactivated, kicked) and 400 "chat not found": the chat is
 *   recorded as blocked in PostgreSQL and later calls to it fail with
 *   `TelegramChatBlocked` without touching the network, until an update from
 *   that chat is finished and `unblockArrived` clears the flag. A reply to the
 *   chat whose update is being handled (`ConversingChat`) is not checked.
 * - 400 "message is not modified" on an edit is success.
 * - Every call has a timeout and is cancelled (AbortSignal) when interrupted.
 *
 * Parts: `BotApiCall.ts` makes one request (policies, metrics, blocked-chat
 * short-circuit), `BotApiTransport.ts` carries grammY's requests over
 * keep-alive `node:http(s)` (instead of node-fetch), `SendGate.ts` paces sends and keeps 429 pauses, `TelegramErrors.ts` types its failures, `BlockedChats.ts`
 * and `WebhookFingerprint.ts` own the two tables (their SQL in `sql/`). This
 * module holds no SQL: it names the methods, their result shapes and timeouts.
 */
import { Context, Duration, Effect, Layer, Option, Redacted, Schema } from "effect"
import type { SqlError } from "effect/sql/SqlError"
import { Api } from "grammy"
import type { Message, Opts, UserFromGetMe, WebhookInfo } from "grammy/types"
import { AppConfig } from "../platform/AppConfig.ts"
import * as BlockedChats from "./BlockedChats.ts"
import * as BotApiTransport from "./BotApiTransport.ts"
import { type Call, makeCall, type RawApi } from "./BotApiCall.ts"
import { makeSendGate } from "./SendGate.ts"
import { makeDownloadFile, type TelegramFileUnavailable } from "./TelegramFiles.ts"
import type { TelegramBadRequest, TelegramError } from "./TelegramErrors.ts"
import { UpdateEnvelope } from "./TelegramUpdate.ts"
import * as WebhookFingerprint from "./WebhookFingerprint.ts"

export { ConversingChat, RATE_LIMIT_MAX_WAIT, RATE_LIMIT_MAX_WAITS } from "./BotApiCall.ts"
export { type SendGate, SendWaits } from "./SendGate.ts"
export { migration } from "./sql/migrate.ts"
export {
  TelegramApiError,
  TelegramBadRequest,
  TelegramChatBlocked,
  TelegramConflict,
  type TelegramError,
  TelegramNetworkError,
  TelegramRateLimited,
  TelegramServerError,
  TelegramUnauthorized
} from "./TelegramErrors.ts"
export type { AllowedUpdates, WebhookSpec } from "./WebhookFingerprint.ts"
export { BOT_DOWNLOAD_LIMIT, TelegramFileUnavailable } from "./TelegramFiles.ts"

/** Extra time a long poll gets beyond its own `timeout`. */
export const LONG_POLL_MARGIN = Duration.seconds(10)
/** Uploads (sendPhoto/sendDocument with a file) get at least this long. */
export const UPLOAD_TIMEOUT = Duration.minutes(2)

// ---------------------------------------------------------------------------
// Results, checked for the fields the bot relies on (everything else kept). Plain structures: `BotApiCall`
// checks an answer against them and returns it as it came.

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
// The service

type EditText = Opts<"editMessageText">
type EditMarkup = Opts<"editMessageReplyMarkup">

/** The Bot API methods the bot uses, plus the blocked-chat bookkeeping. */
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
  readonly ensureWebhook: (spec: WebhookFingerprint.WebhookSpec) => Effect.Effect<"unchanged" | "set", TelegramError>
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
  /**
   * The bytes of a file a user sent (getFile, then the download), at most
   * 20 MB. The file URL carries the token and never leaves this call.
   */
  readonly downloadFile: (fileId: string) => Effect.Effect<Uint8Array, TelegramError | TelegramFileUnavailable>
  /** Whether sends to this chat are short-circuited. A database failure reads as "not blocked". */
  readonly isBlocked: (chatId: number) => Effect.Effect<boolean>
  /**
   * Clears the blocked flag: an update from the chat proves it can be written
   * to again. Never fails (logged).
   */
  readonly markUnblocked: (chatIds: number | ReadonlyArray<number>) => Effect.Effect<void>
  /**
   * Clears the blocked flag of chats updates arrived from, where it is older
   * than the update (`BlockedChats.unblockArrived`); fails with the
   * database's error, for the dispatcher's finishing transaction.
   */
  readonly unblockArrived: (arrivals: ReadonlyArray<BlockedChats.Arrival>) => Effect.Effect<void, SqlError>
}

/** Numeric `chat_id` of a call, for blocked tracking; usernames (`@channel`) are not tracked. */
const numericChat = (params: { readonly chat_id?: number | string | undefined }): number | undefined =>
  typeof params.chat_id === "number" && Number.isSafeInteger(params.chat_id) ? params.chat_id : undefined

const NOT_MODIFIED = /message is not modified/i

const ignoreNotModified = (effect: Effect.Effect<unknown, TelegramError>): Effect.Effect<void, TelegramError> =>
  effect.pipe(
    Effect.asVoid,
    Effect.catchIf(
      (error): error is TelegramBadRequest =>
        error._tag === "TelegramBadRequest" && NOT_MODIFIED.test(error.description),
      () => Effect.void
    )
  )

/**
 * The methods that write to a chat (each its own span, `Telegram.<method>`).
 * A file given as an upload rather than a file id or URL gets `uploadTimeout`.
 */
const chatMethods = (call: Call, timeout: Duration.Duration) => {
  const uploadTimeout = Duration.max(timeout, UPLOAD_TIMEOUT)
  const toChat = <S extends Schema.Decoder<unknown>>(
    method: string,
    params: { readonly chat_id?: number | string | undefined },
    result: S,
    file?: unknown
  ) =>
    call(method, params, {
      result,
      timeout: file !== undefined && typeof file !== "string" ? uploadTimeout : timeout,
      chatId: numericChat(params)
    })
  // The result was checked against `MessageResult`; grammY's type names the rest of it.
  const as = <A>() => (value: unknown) => value as A
  return {
    sendMessage: Effect.fn("Telegram.sendMessage")((params: Opts<"sendMessage">) =>
      Effect.map(toChat("sendMessage", params, MessageResult), as<Message.TextMessage>())
    ),
    editMessageText: Effect.fn("Telegram.editMessageText")((params: EditText) =>
      ignoreNotModified(toChat("editMessageText", params, EditResult))
    ),
    editMessageReplyMarkup: Effect.fn("Telegram.editMessageReplyMarkup")((params: EditMarkup) =>
      ignoreNotModified(toChat("editMessageReplyMarkup", params, EditResult))
    ),
    sendPhoto: Effect.fn("Telegram.sendPhoto")((params: Opts<"sendPhoto">) =>
      Effect.map(toChat("sendPhoto", params, MessageResult, params.photo), as<Message.PhotoMessage>())
    ),
    sendDocument: Effect.fn("Telegram.sendDocument")((params: Opts<"sendDocument">) =>
      Effect.map(toChat("sendDocument", params, MessageResult, params.document), as<Message.DocumentMessage>())
    ),
    sendChatAction: Effect.fn("Telegram.sendChatAction")((params: Opts<"sendChatAction">) =>
      Effect.asVoid(toChat("sendChatAction", params, TrueResult))
    ),
    deleteMessage: Effect.fn("Telegram.deleteMessage")((params: Opts<"deleteMessage">) =>
      Effect.asVoid(toChat("deleteMessage", params, TrueResult))
    )
  }
}

/** The methods about the bot itself and its webhook (each its own span). */
const botMethods = (call: Call, timeout: Duration.Duration) => ({
  getMe: call("getMe", undefined, { result: BotResult, timeout }).pipe(
    Effect.map((me) => me as unknown as UserFromGetMe),
    Effect.withSpan("Telegram.getMe")
  ),
  getUpdates: Effect.fn("Telegram.getUpdates")(function*(params: Opts<"getUpdates">) {
    const elements = yield* call("getUpdates", params, {
      result: UpdatesResult,
      timeout: Duration.sum(Duration.seconds(params.timeout ?? 0), LONG_POLL_MARGIN)
    })
    const updates = elements.flatMap((element) => Option.toArray(decodeEnvelope(element)))
    if (updates.length !== elements.length) {
      yield* Effect.logWarning(
        `[TELEGRAM] getUpdates returned ${
          elements.length - updates.length
        } element(s) without an integer update_id; skipped`
      )
    }
    return updates
  }),
  setWebhook: Effect.fn("Telegram.setWebhook")((params: Opts<"setWebhook">) =>
    Effect.asVoid(call("setWebhook", params, { result: TrueResult, timeout }))
  ),
  deleteWebhook: Effect.fn("Telegram.deleteWebhook")((params?: Opts<"deleteWebhook">) =>
    Effect.asVoid(call("deleteWebhook", params ?? {}, { result: TrueResult, timeout }))
  ),
  getWebhookInfo: call("getWebhookInfo", undefined, { result: WebhookInfoResult, timeout }).pipe(
    Effect.map((info) => info as unknown as WebhookInfo),
    Effect.withSpan("Telegram.getWebhookInfo")
  ),
  setMyCommands: Effect.fn("Telegram.setMyCommands")((params: Opts<"setMyCommands">) =>
    Effect.asVoid(call("setMyCommands", params, { result: TrueResult, timeout }))
  ),
  answerCallbackQuery: Effect.fn("Telegram.answerCallbackQuery")((params: Opts<"answerCallbackQuery">) =>
    Effect.asVoid(call("answerCallbackQuery", params, { result: TrueResult, timeout }))
  )
})

const make = Effect.gen(function*() {
  const config = yield* AppConfig
  const blockedChats = yield* BlockedChats.make
  const fingerprints = yield* WebhookFingerprint.make
  const transport = yield* Effect.acquireRelease(
    Effect.sync(() => BotApiTransport.make()),
    (transport) => Effect.sync(transport.close)
  )
  // grammY's own timer stays out of the way: our Effect timeout governs each call.
  const api = new Api(Redacted.value(config.telegramBotToken), {
    apiRoot: config.telegramApiRoot,
    timeoutSeconds: 3600,
    // grammY builds the request and reads the answer; the transport only moves the bytes (cheaper than node-fetch).
    fetch: transport.fetch as unknown as typeof fetch
  })
  const call = makeCall(api.raw as unknown as RawApi, blockedChats, makeSendGate({ pacing: config.telegramPacing }))
  const bot = botMethods(call, config.telegramRequestTimeout)

  const ensureWebhook = Effect.fn("Telegram.ensureWebhook")(function*(spec: WebhookFingerprint.WebhookSpec) {
    const fingerprint = WebhookFingerprint.fingerprintOf(spec, config.telegramBotToken)
    const info = yield* bot.getWebhookInfo
    if (WebhookFingerprint.isApplied(info, spec, yield* fingerprints.read, fingerprint)) return "unchanged" as const
    yield* bot.setWebhook({
      url: spec.url,
      secret_token: Redacted.value(spec.secretToken),
      allowed_updates: spec.allowedUpdates,
      max_connections: spec.maxConnections,
      drop_pending_updates: false
    })
    yield* fingerprints.store(fingerprint)
    return "set" as const
  })

  return Telegram.of({
    ...bot,
    ...chatMethods(call, config.telegramRequestTimeout),
    ensureWebhook,
    downloadFile: makeDownloadFile(
      call,
      config.telegramApiRoot,
      config.telegramBotToken,
      config.telegramRequestTimeout
    ),
    isBlocked: blockedChats.isBlocked,
    markUnblocked: blockedChats.markUnblocked,
    unblockArrived: blockedChats.unblockArrived
  })
})

/** The Telegram Bot API client. */
export class Telegram extends Context.Service<Telegram, TelegramShape>()("zimage-bot/Telegram") {
  /** Needs `AppConfig` and `SqlClient` (migration 0002 applied). */
  static readonly layer = Layer.effect(Telegram, make)
}
