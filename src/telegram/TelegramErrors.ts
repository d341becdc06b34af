/**
 * The typed errors of Bot API calls, and how a grammY failure becomes one.
 *
 * grammY errors may carry the token in URLs (with node-fetch,
 * `HttpError.error.message` has `/bot<token>/`; `BotApiTransport.ts` keeps
 * URLs out of its errors, but this module does not rely on it). Nothing from
 * them reaches a message here except Telegram's own `description` and
 * well-known error codes; the log redactor is the last line of defence, not
 * the first.
 */
import { Predicate, Schema } from "effect"
import { GrammyError, HttpError } from "grammy"

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

/** Every way a Bot API call can fail. */
export type TelegramError =
  | TelegramRateLimited
  | TelegramChatBlocked
  | TelegramBadRequest
  | TelegramConflict
  | TelegramUnauthorized
  | TelegramServerError
  | TelegramApiError
  | TelegramNetworkError

/** A call that got no usable answer, with a short `reason` free of URLs and tokens. */
export const networkError = (method: string, reason: string) =>
  new TelegramNetworkError({ method, reason, message: `Telegram ${method} failed: ${reason}` })

/**
 * A network failure as a short reason: an errno code or the error's type
 * (`BotApiTransport.ts` and node-fetch give the same shapes), never its message.
 */
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

/**
 * A failed grammY request as a `TelegramError`. `chatId`: the chat the call
 * wrote to, if numeric; only such calls can end in `TelegramChatBlocked`.
 */
export const fromGrammy = (method: string, chatId: number | undefined, error: unknown): TelegramError => {
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
