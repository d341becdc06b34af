/**
 * Every metric the service exports, in one place, and `GET /metrics` in the
 * Prometheus text format (Effect `Metric` + `PrometheusMetrics`).
 *
 * Gauges that describe the database (queue depth, in-flight generations) are
 * refreshed from their sources when `/metrics` is scraped, so they are right
 * on every instance, ACTIVE or PASSIVE.
 */
import { Cause, Context, Effect, Exit, Layer, Metric, Ref } from "effect"
import { HttpRouter, HttpServerResponse } from "effect/http"
import * as PrometheusMetrics from "effect/observability/PrometheusMetrics"
import { DATABASE_READ_TTL } from "./Health.ts"

const seconds = Metric.boundariesFromIterable([0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30])
const generationSeconds = Metric.boundariesFromIterable([5, 10, 20, 30, 45, 60, 90, 120, 180, 300, 600])

/** A counter that only goes up (Prometheus `_total`). */
const counter = (name: string, description: string) => Metric.counter(name, { description, incremental: true })

/** The series `seriesOf` made, by metric name and attributes. */
const madeSeries = new Map<string, Metric.Counter<number>>()

/**
 * The series of a counter made by `counter` for fixed `attributes`, made once
 * per attribute set and kept: the same series `Metric.withAttributes` gives,
 * but updating it copies no fiber context and never rebuilds the series key
 * (a JSON string, rebuilt by `withAttributes` whenever the attributes differ
 * from the previous update's). For counters updated on every update or call.
 */
export const seriesOf = (metric: Metric.Counter<number>, attributes: Readonly<Record<string, string>>) => {
  const key = `${metric.id}\u0000${JSON.stringify(attributes)}`
  let series = madeSeries.get(key)
  if (series === undefined) {
    series = Metric.counter(metric.id, {
      ...(metric.description === undefined ? {} : { description: metric.description }),
      incremental: true,
      attributes
    })
    madeSeries.set(key, series)
  }
  return series
}

/** A gauge set to a current value. */
const gauge = (name: string, description: string) => Metric.gauge(name, { description })

export const updatesReceived = counter(
  "zimage_updates_received_total",
  "Telegram updates stored in the inbox, by source (webhook, polling); duplicates excluded"
)
export const updatesProcessed = counter(
  "zimage_updates_processed_total",
  "Telegram updates finished, by outcome (done, dead)"
)
export const updateRetries = counter("zimage_update_retries_total", "Failed handler attempts that were retried")
export const updateReschedules = counter(
  "zimage_update_reschedules_total",
  "Handler runs put off because Telegram asked to wait (flood limits); not failures"
)
export const updatesDropped = counter(
  "zimage_updates_dropped_total",
  "Telegram updates acknowledged but not stored (flood), or stored and answered only by the flood notice or not at all (flood_unanswered)"
)
export const updateProcessingSeconds = Metric.histogram("zimage_update_processing_seconds", {
  description: "Time from claiming an update to finishing it",
  boundaries: seconds
})
export const queueDepth = gauge("zimage_queue_depth", "Telegram updates stored and not yet finished")
export const queueOldestPendingSeconds = gauge(
  "zimage_queue_oldest_pending_seconds",
  "Age of the oldest update waiting to be dispatched (0 when none waits)"
)
export const generationsFinished = counter(
  "zimage_generations_total",
  "Generations finished, by outcome (delivered, failed, timeout)"
)
export const generationSecondsHistogram = Metric.histogram("zimage_generation_seconds", {
  description: "Time from a generation's creation to its delivery",
  boundaries: generationSeconds
})
export const generationsInFlight = gauge("zimage_generations_in_flight", "Generations not yet delivered or failed")
export const kieCalls = counter("zimage_kie_calls_total", "Kie.ai API calls, by method and result")
export const telegramCalls = counter("zimage_telegram_calls_total", "Telegram Bot API calls, by method and result")
export const leaderActive = gauge(
  "zimage_leader_active",
  "1 while this instance is ACTIVE (holds the leader lock), else 0"
)
export const leaderTransitions = counter(
  "zimage_leader_transitions_total",
  "Leadership changes of this instance, by kind (acquired, lost, released, failed: leader-only services did not start)"
)
export const generationsRefused = counter(
  "zimage_generations_refused_total",
  "Generations a user asked for and was refused, by reason (busy: one already in flight, daily: the user's " +
    "DAILY_GENERATION_LIMIT, global: GLOBAL_DAILY_GENERATION_LIMIT of all users together)"
)
/** The reasons `generationsRefused` counts, each a series from the start. */
export const REFUSAL_REASONS = ["busy", "daily", "global"] as const
export const generationsToday = gauge(
  "zimage_generations_today",
  "Generations started since 00:00 UTC that did not fail: what GLOBAL_DAILY_GENERATION_LIMIT counts"
)
export const accessRefused = counter(
  "zimage_access_refused_total",
  "Messages and button presses from users not in ALLOWED_USER_IDS, answered with the private-bot text"
)

/**
 * The `result` label of `zimage_kie_callbacks_total`: what the route did with
 * a request (`stored`, `hint` and `duplicate` as the store says; `unknown_task`
 * for a task this bot never created; `not_final` for an intermediate state;
 * then the refusals 400, 401, 413 and 503).
 */
export const kieCallbackResults = [
  "stored",
  "hint",
  "duplicate",
  "unknown_task",
  "not_final",
  "bad_request",
  "unauthorized",
  "too_large",
  "unavailable"
] as const
/** One value of `kieCallbackResults`. */
export type KieCallbackResult = typeof kieCallbackResults[number]
export const kieCallbacks = counter(
  "zimage_kie_callbacks_total",
  "Requests to /kie/callback, by result (stored, hint, duplicate, unknown_task, not_final, bad_request, " +
    "unauthorized, too_large, unavailable)"
)

/**
 * `countCall`'s series by metric, method and result, found without building
 * the attributes' JSON that `seriesOf` keys on (one lookup per Bot API and
 * Kie call). The labels are closed sets (methods the code names, error
 * tags), so the map stays small.
 */
const callSeries = new Map<string, Metric.Counter<number>>()

/** Counts one call of `method` with `result` (e.g. "ok", an error tag). */
export const countCall = (metric: typeof kieCalls, method: string, result: string) => {
  const key = `${metric.id}\u0000${method}\u0000${result}`
  let series = callSeries.get(key)
  if (series === undefined) {
    series = seriesOf(metric, { method, result })
    callSeries.set(key, series)
  }
  return Metric.update(series, 1)
}

/** `TelegramRateLimited` → `rate_limited` (with `prefix` "Telegram"). */
const snake = (tag: string, prefix: string) =>
  (tag.startsWith(prefix) ? tag.slice(prefix.length) : tag)
    .replace(/([a-z0-9])([A-Z])/g, "$1_$2")
    .toLowerCase()

/**
 * The `result` label of a finished call: "ok", the error's tag in snake case
 * without `prefix` (a closed set: the client's error union), or "defect".
 * `undefined` for an interruption, which is not a result of the call.
 */
export const resultOf = (exit: Exit.Exit<unknown, unknown>, prefix: string): string | undefined => {
  if (Exit.isSuccess(exit)) return "ok"
  if (Cause.hasInterruptsOnly(exit.cause)) return undefined
  const error = Cause.findErrorOption(exit.cause)
  if (error._tag === "Some") {
    const tag = (error.value as { readonly _tag?: unknown })._tag
    return typeof tag === "string" && /^[A-Za-z]{1,64}$/.test(tag) ? snake(tag, prefix) : "error"
  }
  return "defect"
}

/** Counts a finished call of `method` on `metric` by its exit; interruptions are not counted. */
export const countExit =
  (metric: typeof kieCalls, method: string, prefix: string) => <A, E>(exit: Exit.Exit<A, E>): Effect.Effect<void> => {
    const result = resultOf(exit, prefix)
    return result === undefined ? Effect.void : countCall(metric, method, result)
  }

/**
 * Series that exist from the start at 0, so that `rate()`/`increase()` and
 * alerts on them work before the first event (a counter series that appears
 * only on its first increment hides that increment from `increase()`).
 */
const initialSeries = Effect.all([
  Metric.update(Metric.withAttributes(updatesReceived, { source: "webhook" }), 0),
  Metric.update(Metric.withAttributes(updatesReceived, { source: "polling" }), 0),
  Metric.update(Metric.withAttributes(updatesProcessed, { outcome: "done" }), 0),
  Metric.update(Metric.withAttributes(updatesProcessed, { outcome: "dead" }), 0),
  Metric.update(updateRetries, 0),
  Metric.update(updateReschedules, 0),
  Metric.update(Metric.withAttributes(updatesDropped, { reason: "flood" }), 0),
  Metric.update(Metric.withAttributes(updatesDropped, { reason: "flood_unanswered" }), 0),
  Metric.update(queueDepth, 0),
  Metric.update(queueOldestPendingSeconds, 0),
  Metric.update(leaderActive, 0),
  ...["acquired", "lost", "released", "failed"].map((kind) =>
    Metric.update(Metric.withAttributes(leaderTransitions, { kind }), 0)
  ),
  ...REFUSAL_REASONS.map((reason) => Metric.update(Metric.withAttributes(generationsRefused, { reason }), 0)),
  Metric.update(accessRefused, 0),
  ...kieCallbackResults.map((result) => Metric.update(Metric.withAttributes(kieCallbacks, { result }), 0))
], { discard: true })

/**
 * Gauges refreshed at scrape time. Services register an effect that sets
 * their gauges (and may fail or be slow: it is bounded and skipped then).
 * They read the database, so a scrape runs them at most about once a second
 * (`DATABASE_READ_TTL`, on the Effect clock); scrapes in between share the
 * last refresh.
 */
export class MetricsRefresh extends Context.Service<MetricsRefresh, {
  readonly register: (refresh: Effect.Effect<void>) => Effect.Effect<void>
  /** Runs every refresher now. */
  readonly refresh: Effect.Effect<void>
  /** What a scrape runs: `refresh`, unless one finished less than `DATABASE_READ_TTL` ago. */
  readonly refreshRecent: Effect.Effect<void>
}>()("zimage-bot/MetricsRefresh") {
  static readonly layer = Layer.effect(
    MetricsRefresh,
    Effect.gen(function*() {
      yield* initialSeries
      const refreshers = yield* Ref.make<ReadonlyArray<Effect.Effect<void>>>([])
      const refresh = Effect.flatMap(Ref.get(refreshers), (all) =>
        Effect.forEach(
          all,
          (refresh) => refresh.pipe(Effect.timeout("1 second"), Effect.catchCause(() => Effect.void)),
          { concurrency: "unbounded", discard: true }
        ))
      const [refreshRecent, forget] = yield* Effect.cachedInvalidateWithTTL(refresh, DATABASE_READ_TTL)
      return MetricsRefresh.of({
        register: (refresher) => Ref.update(refreshers, (all) => [...all, refresher]).pipe(Effect.andThen(forget)),
        refresh,
        refreshRecent
      })
    })
  )
}

/** `GET /metrics`: the database-derived gauges are read at most about once a second however often it is scraped. */
export const MetricsRoute = HttpRouter.add(
  "GET",
  "/metrics",
  Effect.gen(function*() {
    const refresh = yield* MetricsRefresh
    yield* refresh.refreshRecent
    const body = yield* PrometheusMetrics.format()
    return HttpServerResponse.text(body, { contentType: "text/plain; version=0.0.4; charset=utf-8" })
  })
)
