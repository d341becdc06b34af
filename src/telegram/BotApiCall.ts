/**
 * One Bot API request, as every method of the Telegram client makes it:
 * short-circuit for blocked chats, the flood gate, timeout, abort on
 * interruption, typed errors, checked result, 429 retries.
 *
 * - Flood gate (`SendGate.ts`): a call to a chat waits for the chat's slot
 *   (pacing, or a pause after a 429) before it is sent; calls to no chat
 *   (getUpdates, answerCallbackQuery, …) are never held back. The caller's `SendWaits`
 *   decides how: a wait longer than its `maxWaitMillis` fails at once with
 *   `TelegramRateLimited` (the dispatcher then runs the update again later,
 *   holding no worker), a shorter one runs through its `around`.
 * - 429: pauses the chat (or every chat, see `SendGate.ts`) for `retry_after`
 *   and retries through the gate, at most `RATE_LIMIT_MAX_WAITS` times; then
 *   `TelegramRateLimited`.
 * - 403 (blocked, deactivated, kicked) and 400 "chat not found" on a call to a
 *   numeric chat: the chat is recorded in `BlockedChats`, and later calls to it
 *   fail with `TelegramChatBlocked` without touching the network. Not a call
 *   to the `ConversingChat` (a reply to an update that just came from it):
 *   that chat evidently talks to us (its flag is cleared when its update is
 *   claimed), so the lookup is skipped; a 403 still records it.
 * - Every request sent is counted in `zimage_telegram_calls_total{method,result}`
 *   (each 429 retry is a request of its own; a call skipped for a blocked chat
 *   or refused by the gate is not).
 *
 * Cost: this runs once per message the bot sends, so its success path is
 * kept lean (no generators, no schedule until a 429, the result checked not
 * copied, the timeout on one timer: see `withTimer`). `bench/telegramCall.ts`
 * measures the client CPU of a `sendMessage` through it next to grammY alone.
 */
import { Clock, Context, Duration, Effect, Schedule, Schema } from "effect"
import * as Metrics from "../observability/Metrics.ts"
import { isPlainTimer } from "../platform/PlainTimer.ts"
import type { BlockedChats } from "./BlockedChats.ts"
import { type SendGate, SendWaits } from "./SendGate.ts"
import {
  fromGrammy,
  networkError,
  TelegramChatBlocked,
  type TelegramError,
  TelegramRateLimited
} from "./TelegramErrors.ts"

/** At most this many 429s per call before it fails with `TelegramRateLimited`. */
export const RATE_LIMIT_MAX_WAITS = 3
/** The longest wait taken in line outside a handler (the default `SendWaits`). */
export const RATE_LIMIT_MAX_WAIT = Duration.seconds(30)

/**
 * After a 429 the call is tried again at once: the gate, now paused, does
 * the waiting. Not when the gate refused the wait as too long.
 */
const retriesAfter429 = (error: TelegramError, maxWaitMillis: number) =>
  error._tag === "TelegramRateLimited" && error.retryAfterSeconds * 1000 <= maxWaitMillis

/**
 * The retries after a first 429 that is retried (`retriesAfter429`): the
 * schedule is built only then, never on the success path.
 */
const rateLimitPolicy = (maxWaitMillis: number) =>
  Schedule.recurs(RATE_LIMIT_MAX_WAITS - 1).pipe(
    Schedule.setInputType<TelegramError>(),
    Schedule.while(({ input }) => retriesAfter429(input, maxWaitMillis))
  )

/**
 * The chat whose update is being handled (set by the dispatcher around a
 * handler run): calls to it are replies to a chat that just wrote to us, so
 * they skip the blocked-chat lookup (one SELECT per reply). Outside a handler
 * (the engine's deliveries, the bot's own sends) it is unset and every call
 * to a chat is checked.
 */
export const ConversingChat = Context.Reference<number | undefined>("zimage-bot/ConversingChat", {
  defaultValue: () => undefined
})

/** grammY's raw methods: `(payload?, signal)` → the Bot API `result`. */
export type RawApi = Record<string, (...args: ReadonlyArray<unknown>) => Promise<unknown>>

/** What one call needs besides its method and payload. */
export interface CallOptions<S extends Schema.Decoder<unknown>> {
  /**
   * The documented shape of the result; anything else is a `TelegramNetworkError`.
   * The answer is checked against it, not decoded (it is returned as it came), so
   * it must be a plain structure without transformations.
   */
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

/**
 * The check of a result against its schema, made once per schema. The result
 * schemas are plain structures (no transformations), so a value that passes
 * is its own decoded form: checking is enough, nothing needs to be built.
 */
const guards = new WeakMap<Schema.Decoder<unknown>, (value: unknown) => boolean>()
const guardOf = (schema: Schema.Decoder<unknown>) => {
  let guard = guards.get(schema)
  if (guard === undefined) {
    guard = Schema.is(schema as Schema.Schema<unknown>)
    guards.set(schema, guard)
  }
  return guard
}

const skippedAsBlocked = (method: string, chatId: number) =>
  new TelegramChatBlocked({
    method,
    chatId,
    description: "the chat is marked as blocked",
    message: `Telegram ${method} skipped: chat ${chatId} is marked as blocked`
  })

/** The gate refused to wait this long in line. */
const waitTooLong = (method: string, chatId: number | undefined, waitMillis: number) =>
  new TelegramRateLimited({
    method,
    retryAfterSeconds: Math.ceil(waitMillis / 1000),
    message: `Telegram ${method}${chatId === undefined ? "" : ` to chat ${chatId}`} must wait ${
      Math.ceil(waitMillis / 1000)
    } s (flood limits)`
  })

/**
 * `request` with a timeout, on the live clock: one `setTimeout` and one
 * `AbortController`, aborted on the timeout or when the fiber is interrupted.
 * The same as `Effect.tryPromise` + `Effect.timeoutOrElse`, which fork two
 * fibers per call to race the request against a sleep (a quarter of the
 * wrapper's cost per call); under another clock (tests) the call takes that
 * general path, so its timeout follows that clock.
 */
const withTimer = (
  request: (signal: AbortSignal) => Promise<unknown>,
  timeoutMillis: number,
  failed: (error: unknown) => TelegramError,
  timedOut: () => TelegramError
) =>
  Effect.callback<unknown, TelegramError>((resume) => {
    const controller = new AbortController()
    const timer = setTimeout(() => {
      controller.abort()
      resume(Effect.fail(timedOut()))
    }, timeoutMillis)
    const settled = (effect: Effect.Effect<unknown, TelegramError>) => {
      clearTimeout(timer)
      resume(effect)
    }
    try {
      request(controller.signal).then(
        (value) => settled(Effect.succeed(value)),
        (error) => settled(Effect.suspend(() => Effect.fail(failed(error))))
      )
    } catch (error) {
      settled(Effect.suspend(() => Effect.fail(failed(error))))
    }
    // Interrupted: the request is aborted (the transport destroys it) and the timer dropped.
    return Effect.sync(() => {
      clearTimeout(timer)
      controller.abort()
    })
  })

/** Calls through `raw`, keeping the blocked chats in `blockedChats` and passing `gate`. */
export const makeCall =
  (raw: RawApi, blockedChats: BlockedChats, gate: SendGate): Call => (method, payload, options) => {
    const { chatId } = options
    const isResult = guardOf(options.result)
    const request = (signal: AbortSignal) =>
      payload === undefined ? raw[method]!(signal) : raw[method]!(payload, signal)
    const failed = (error: unknown) => fromGrammy(method, chatId, error)
    const timedOut = () => networkError(method, `no answer within ${Duration.format(options.timeout)}`)
    const timeoutMillis = Duration.toMillis(options.timeout)
    const send = Effect.clockWith((clock) =>
      isPlainTimer(clock, timeoutMillis)
        ? withTimer(request, timeoutMillis, failed, timedOut)
        : Effect.tryPromise({ try: request, catch: failed }).pipe(
          Effect.timeoutOrElse({ duration: options.timeout, orElse: () => Effect.fail(timedOut()) })
        )
    ).pipe(
      Effect.flatMap((value) =>
        isResult(value)
          ? Effect.succeed(value)
          : Effect.fail(networkError(method, "the answer did not have the documented shape"))
      ),
      Effect.onExit(Metrics.countExit(Metrics.telegramCalls, method, "Telegram"))
    )
    /** One attempt: through the gate (a chat's slot), then the request; a 429 pauses the gate. */
    const attempt = (waits: SendWaits, rateLimits: { count: number }) => {
      const sent = send.pipe(Effect.tapError((error) =>
        error._tag === "TelegramRateLimited"
          ? recordRateLimit(gate, chatId, error, ++rateLimits.count, waits.maxWaitMillis)
          : Effect.void
      ))
      if (chatId === undefined) return sent
      return Effect.clockWith((clock) => {
        const now = clock.currentTimeMillisUnsafe()
        const wait = gate.waitFor(chatId, waits.own, now)
        if (wait > waits.maxWaitMillis) return Effect.fail(waitTooLong(method, chatId, wait))
        const booked = gate.take(chatId, waits.own, now)
        return booked > 0 ? Effect.andThen(waits.around(Effect.sleep(Duration.millis(booked))), sent) : sent
      })
    }
    const gatedCall = Effect.flatMap(Effect.service(SendWaits), (waits) => {
      const rateLimits = { count: 0 }
      const gated = attempt(waits, rateLimits)
      return gated.pipe(
        Effect.catchIf(
          (error) => retriesAfter429(error, waits.maxWaitMillis),
          () => Effect.retry(gated, rateLimitPolicy(waits.maxWaitMillis))
        ),
        Effect.tapError((error) =>
          error._tag === "TelegramChatBlocked" ? blockedChats.markBlocked(error.chatId, error.description) : Effect.void
        )
      )
    })
    if (chatId === undefined) return gatedCall
    return Effect.flatMap(
      Effect.service(ConversingChat),
      (conversing) =>
        conversing === chatId ?
          gatedCall :
          Effect.flatMap(
            blockedChats.isBlocked(chatId),
            (blocked) => blocked ? Effect.fail(skippedAsBlocked(method, chatId)) : gatedCall
          )
    )
  }

/** A 429 from Telegram pauses the chat (or everything) in the gate, and is logged. */
const recordRateLimit = (
  gate: SendGate,
  chatId: number | undefined,
  error: TelegramRateLimited,
  nth: number,
  maxWaitMillis: number
) =>
  Effect.gen(function*() {
    gate.rateLimited(chatId, error.retryAfterSeconds * 1000, yield* Clock.currentTimeMillis)
    const paused = chatId === undefined ? "every chat" : `chat ${chatId}`
    const next = nth > RATE_LIMIT_MAX_WAITS || error.retryAfterSeconds * 1000 > maxWaitMillis
      ? "not waiting here"
      : `waiting ${error.retryAfterSeconds} s (wait ${nth} of ${RATE_LIMIT_MAX_WAITS})`
    yield* Effect.logWarning(
      `[TELEGRAM] 429 on ${error.method}: ${paused} paused for ${error.retryAfterSeconds} s; ${next}`
    )
  })
