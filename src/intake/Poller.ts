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
import { Duration, Effect, Layer, Metric, Schedule } from "effect"
import { AppConfig } from "../platform/AppConfig.ts"
import { Inbox } from "../inbox/Inbox.ts"
import * as Metrics from "../observability/Metrics.ts"
import { makeProblemLog } from "../platform/ProblemLog.ts"
import { retryLogged } from "../platform/Supervised.ts"
import { safeJson } from "../telegram/SafeJson.ts"
import { Telegram, type TelegramError } from "../telegram/Telegram.ts"
import { allowedUpdates, type UpdateEnvelope } from "../telegram/TelegramUpdate.ts"
import { backoff } from "../platform/Retry.ts"

/** Seconds Telegram holds a getUpdates call open when there is nothing to return. */
export const POLL_TIMEOUT_SECONDS = 25
/** Updates asked for per getUpdates call (Telegram's maximum). */
export const POLL_LIMIT = 100

/** Network errors, 5xx, an unreachable database: retry soon, then less often. */
export const pollPolicy = backoff("1 second", "30 seconds")
/** 409 Conflict: someone else is consuming updates; give them room. */
export const conflictPolicy = backoff("5 seconds", "60 seconds")

const describe = (error: TelegramError): string => error.message

/** New updates stored from getUpdates (duplicates are not counted). */
const receivedByPolling = Metrics.seriesOf(Metrics.updatesReceived, { source: "polling" })

/** Logs each wait at debug, so an operator can follow the backoff. */
const logDelays = <Output, Input>(policy: Schedule.Schedule<Output, Input>) =>
  policy.pipe(
    Schedule.modifyDelay(({ duration }) =>
      Effect.as(Effect.logDebug(`[POLL] next attempt in ${Duration.format(duration)}`), duration)
    )
  )

/** Retries of anything but getUpdates. */
const pollRetryPolicy = logDelays(pollPolicy)

/**
 * Retries of getUpdates: `conflictPolicy` after a 409, `pollPolicy` after
 * anything else, each keeping its own progress until polling works again.
 */
const getUpdatesRetryPolicy = logDelays(Schedule.fromStep(Effect.gen(function*() {
  const poll = yield* Schedule.toStep(pollPolicy)
  const conflict = yield* Schedule.toStep(conflictPolicy)
  return (now: number, error: TelegramError) => (error._tag === "TelegramConflict" ? conflict : poll)(now, error)
})))

/** Long polling of the ACTIVE instance when no PUBLIC_URL is set. */
export const layer: Layer.Layer<never, never, AppConfig | Inbox | Telegram> = Layer.effectDiscard(
  Effect.gen(function*() {
    const config = yield* AppConfig
    const inbox = yield* Inbox
    const telegram = yield* Telegram
    if (config.publicUrl._tag === "Some") {
      return yield* Effect.logError("[POLL] not started: PUBLIC_URL is set, so updates come by webhook")
    }

    // One problem log for every step: a problem is reported once, whichever step meets it.
    const problems = makeProblemLog()
    const retried = <A, E>(
      effect: Effect.Effect<A, E>,
      policy: Schedule.Schedule<unknown, E>,
      problem: (error: E) => string
    ) =>
      retryLogged(effect, policy, {
        failing: (error) => `[POLL] ${problem(error)}; retrying with backoff`,
        recovered: "[POLL] polling works again"
      }, problems)

    const removeWebhook = retried(
      telegram.deleteWebhook({ drop_pending_updates: false }),
      pollRetryPolicy,
      (error) => `deleteWebhook failed: ${describe(error)}`
    )

    /** Stores a batch, retrying until it is committed: the offset must not move before. */
    const storeBatch = (updates: ReadonlyArray<UpdateEnvelope>) =>
      retried(
        // NUL or a lone surrogate would make the INSERT fail on every retry: polling would stop for good.
        inbox.store(safeJson(updates)),
        pollRetryPolicy,
        (error) => `could not store ${updates.length} update(s), not confirming them: ${error.message}`
      )

    const getUpdates = (offset: number | undefined) =>
      retried(
        telegram.getUpdates({
          ...(offset === undefined ? {} : { offset }),
          limit: POLL_LIMIT,
          timeout: POLL_TIMEOUT_SECONDS,
          allowed_updates: allowedUpdates
        }),
        getUpdatesRetryPolicy,
        (error) =>
          error._tag === "TelegramConflict"
            ? `409 Conflict, backing off: ${error.description}`
            : `getUpdates failed: ${describe(error)}`
      )

    const poll = Effect.gen(function*() {
      yield* removeWebhook
      yield* Effect.logInfo(`[POLL] long polling started (timeout ${POLL_TIMEOUT_SECONDS} s)`)
      let offset: number | undefined
      for (;;) {
        const updates = yield* getUpdates(offset)
        if (updates.length === 0) continue
        const stored = yield* storeBatch(updates)
        yield* Metric.update(receivedByPolling, stored)
        offset = Math.max(...updates.map((update) => update.update_id)) + 1
        yield* Effect.logDebug(`[POLL] stored ${stored} of ${updates.length} update(s); next offset ${offset}`)
      }
    })

    yield* Effect.forkScoped(poll)
  })
)
