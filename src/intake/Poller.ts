/**
 * Long polling (ACTIVE only, when PUBLIC_URL is unset).
 *
 * First `deleteWebhook` (keeping pending updates: getUpdates cannot run while
 * a webhook is set), then `getUpdates` in a loop: `timeout` 25 s, at most 100,
 * `allowed_updates` message and callback_query. Each batch is stored in one
 * statement; only then does the offset advance, and the next call (offset =
 * last + 1) is what confirms the batch to Telegram. A crash in between means
 * Telegram sends the batch again and the inbox ignores the duplicates.
 *
 * Errors back off with named schedules and are logged once per change: 409
 * Conflict (another getUpdates consumer, or a webhook set by another
 * deployment) with `conflictPolicy`, anything else with `pollPolicy`.
 */
import { Clock, Duration, Effect, Layer, Metric, Schedule } from "effect"
import { AppConfig } from "../platform/AppConfig.ts"
import { Inbox } from "../inbox/Inbox.ts"
import * as Metrics from "../platform/Metrics.ts"
import { makeProblemLog } from "../platform/ProblemLog.ts"
import { Telegram, type TelegramError } from "../telegram/Telegram.ts"
import { allowedUpdates } from "../telegram/TelegramUpdate.ts"
import { backoff } from "../platform/Retry.ts"

/** Seconds Telegram holds a getUpdates call open when there is nothing to return. */
export const POLL_TIMEOUT_SECONDS = 25
export const POLL_LIMIT = 100

/** Network errors, 5xx, an unreachable database: retry soon, then less often. */
export const pollPolicy = backoff("1 second", "30 seconds")
/** 409 Conflict: someone else is consuming updates; give them room. */
export const conflictPolicy = backoff("5 seconds", "60 seconds")

const describe = (error: TelegramError): string => error.message

/** New updates stored from getUpdates (duplicates are not counted). */
const receivedByPolling = Metric.withAttributes(Metrics.updatesReceived, { source: "polling" })

export const layer: Layer.Layer<never, never, AppConfig | Inbox | Telegram> = Layer.effectDiscard(
  Effect.gen(function*() {
    const config = yield* AppConfig
    const inbox = yield* Inbox
    const telegram = yield* Telegram
    if (config.publicUrl._tag === "Some") {
      return yield* Effect.logError("[POLL] not started: PUBLIC_URL is set, so updates come by webhook")
    }

    /** Backoff state: a step per schedule, restarted once polling works again. */
    const problems = makeProblemLog()
    let step = yield* Schedule.toStep(pollPolicy)
    let conflictStep = yield* Schedule.toStep(conflictPolicy)

    const recovered = Effect.gen(function*() {
      if (!(yield* problems.recovered("[POLL] polling works again"))) return
      step = yield* Schedule.toStep(pollPolicy)
      conflictStep = yield* Schedule.toStep(conflictPolicy)
    })

    const backOff = (problem: string, conflict: boolean) =>
      Effect.gen(function*() {
        const now = yield* Clock.currentTimeMillis
        const delay = yield* (conflict ? conflictStep : step)(now, undefined).pipe(
          Effect.map(([, delay]) => delay),
          Effect.orElseSucceed(() => Duration.seconds(30))
        )
        yield* problems.failing(`[POLL] ${problem}; retrying with backoff`)
        yield* Effect.logDebug(`[POLL] next attempt in ${Duration.format(delay)}`)
        yield* Effect.sleep(delay)
      })

    const removeWebhook = Effect.gen(function*() {
      for (;;) {
        const result = yield* Effect.result(telegram.deleteWebhook({ drop_pending_updates: false }))
        if (result._tag === "Success") return yield* recovered
        yield* backOff(`deleteWebhook failed: ${describe(result.failure)}`, false)
      }
    })

    /** Stores a batch, retrying until it is committed: the offset must not move before. */
    const storeBatch = (updates: Parameters<typeof inbox.store>[0]) =>
      Effect.gen(function*() {
        for (;;) {
          const result = yield* Effect.result(inbox.store(updates))
          if (result._tag === "Success") return result.success
          yield* backOff(`could not store ${updates.length} update(s), not confirming them: ${result.failure.message}`, false)
        }
      })

    const poll = Effect.gen(function*() {
      yield* removeWebhook
      yield* Effect.logInfo(`[POLL] long polling started (timeout ${POLL_TIMEOUT_SECONDS} s)`)
      let offset: number | undefined
      for (;;) {
        const result = yield* Effect.result(
          telegram.getUpdates({
            ...(offset === undefined ? {} : { offset }),
            limit: POLL_LIMIT,
            timeout: POLL_TIMEOUT_SECONDS,
            allowed_updates: allowedUpdates
          })
        )
        if (result._tag === "Failure") {
          const error = result.failure
          yield* backOff(
            error._tag === "TelegramConflict"
              ? `409 Conflict, backing off: ${error.description}`
              : `getUpdates failed: ${describe(error)}`,
            error._tag === "TelegramConflict"
          )
          continue
        }
        yield* recovered
        const updates = result.success
        if (updates.length === 0) continue
        const stored = yield* storeBatch(updates)
        yield* Metric.update(receivedByPolling, stored)
        yield* recovered
        offset = Math.max(...updates.map((update) => update.update_id)) + 1
        yield* Effect.logDebug(`[POLL] stored ${stored} of ${updates.length} update(s); next offset ${offset}`)
      }
    })

    yield* Effect.forkScoped(poll)
  })
)
