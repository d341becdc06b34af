/**
 * One Bot API request, as every method of the Telegram client makes it:
 * short-circuit for blocked chats, timeout, abort on interruption, typed
 * errors, decoded result, 429 retries.
 *
 * - 429: waits `retry_after` (on the Effect clock) and retries, at most
 *   `RATE_LIMIT_MAX_WAITS` times and never longer than `RATE_LIMIT_MAX_WAIT`
 *   at once; then `TelegramRateLimited`.
 * - 403 (blocked, deactivated, kicked) and 400 "chat not found" on a call to a
 *   numeric chat: the chat is recorded in `BlockedChats`, and later calls to it
 *   fail with `TelegramChatBlocked` without touching the network.
 * - Every request sent is counted in `zimage_telegram_calls_total{method,result}`
 *   (each 429 retry is a request of its own; a call skipped for a blocked chat
 *   is not).
 */
import { Duration, Effect, Schedule, Schema } from "effect"
import * as Metrics from "../observability/Metrics.ts"
import type { BlockedChats } from "./BlockedChats.ts"
import { fromGrammy, networkError, TelegramChatBlocked, type TelegramError } from "./TelegramErrors.ts"

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

/** grammY's raw methods: `(payload?, signal)` → the Bot API `result`. */
export type RawApi = Record<string, (...args: ReadonlyArray<unknown>) => Promise<unknown>>

/** What one call needs besides its method and payload. */
export interface CallOptions<S extends Schema.Decoder<unknown>> {
  /** The documented shape of the result; anything else is a `TelegramNetworkError`. */
  readonly result: S
  readonly timeout: Duration.Duration
  /** The numeric chat the call writes to, for the blocked-chat bookkeeping. */
  readonly chatId?: number | undefined
}

/** A Bot API call: `call(method, payload, options)`. */
export type Call = <S extends Schema.Decoder<unknown>>(
  method: string,
  payload: object | undefined,
  options: CallOptions<S>
) => Effect.Effect<S["Type"], TelegramError>

const decodeResult = <S extends Schema.Decoder<unknown>>(method: string, schema: S) => (value: unknown) =>
  Schema.decodeUnknownEffect(schema)(value).pipe(
    Effect.mapError(() => networkError(method, "the answer did not have the documented shape"))
  ) as Effect.Effect<S["Type"], TelegramError>

const skippedAsBlocked = (method: string, chatId: number) =>
  new TelegramChatBlocked({
    method,
    chatId,
    description: "the chat is marked as blocked",
    message: `Telegram ${method} skipped: chat ${chatId} is marked as blocked`
  })

/** Calls through `raw`, keeping the blocked chats in `blockedChats`. */
export const makeCall = (raw: RawApi, blockedChats: BlockedChats): Call => (method, payload, options) => {
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
    Effect.tapError((error) =>
      error._tag === "TelegramChatBlocked" ? blockedChats.markBlocked(error.chatId, error.description) : Effect.void
    )
  )
  if (chatId === undefined) return request
  return Effect.flatMap(
    blockedChats.isBlocked(chatId),
    (blocked) => blocked ? Effect.fail(skippedAsBlocked(method, chatId)) : request
  )
}
