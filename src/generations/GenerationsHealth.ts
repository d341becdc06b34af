/**
 * What `/health` and `/metrics` say about generations, on every instance
 * (ACTIVE and PASSIVE alike: the counts come from the database), plus the
 * engine's in-process state on the instance that runs it.
 *
 * `GenerationEngineStatus` is the link between the two: the engine (leader
 * only, rebuilt each term) writes into it, this layer (built once per
 * process, outside the leadership scope) reads it, so the `/health` probe is
 * registered once and never outlives or duplicates an engine.
 *
 * Fields added to `GET /health`:
 * - `inflight_generations`: generations a user is waiting for (not yet
 *   delivered or failed), and `queued_generations` (not yet sent to Kie);
 * - `generations`: the same by status;
 * - `generation_engine`: "running" on the ACTIVE instance, else "stopped";
 * - `kie_paused_until` / `kie_pause`: while the engine holds back createTask
 *   (Kie down, or the account out of credits), until when and why.
 */
import { Context, DateTime, Effect, Layer, Metric, Option, Ref } from "effect"
import { Generations } from "./Generations.ts"
import { Health } from "../observability/Health.ts"
import { generationsInFlight, generationsToday, MetricsRefresh } from "../observability/Metrics.ts"

/** Why and until when the engine holds back createTask requests. */
export interface SubmissionPause {
  readonly untilMillis: number
  /** `transient`: Kie unavailable; `account`: credits, usage cap, key or model problem (an operator must act). */
  readonly kind: "transient" | "account"
  /** The Kie error tag that caused it. */
  readonly code: string
  /** For operators (no secrets, no prompts). */
  readonly detail: string
  /** What users are told while it lasts. */
  readonly userReason: { readonly ru: string; readonly en: string }
}

/** The engine's in-process state, written by the engine and read by `/health`. */
export class GenerationEngineStatus extends Context.Service<GenerationEngineStatus, {
  readonly running: Ref.Ref<boolean>
  readonly pause: Ref.Ref<Option.Option<SubmissionPause>>
}>()("zimage-bot/GenerationEngineStatus") {
  /** Just the state, without the probe (tests of the engine alone). */
  static readonly layerState = Layer.effect(
    GenerationEngineStatus,
    Effect.gen(function*() {
      return GenerationEngineStatus.of({
        running: yield* Ref.make(false),
        pause: yield* Ref.make(Option.none<SubmissionPause>())
      })
    })
  )
}

/** The `/health` fields; exposed for tests. */
export const healthFields = Effect.gen(function*() {
  const generations = yield* Generations
  const status = yield* GenerationEngineStatus
  const counts = yield* generations.counts
  const running = yield* Ref.get(status.running)
  const pause = yield* Ref.get(status.pause)
  const now = yield* DateTime.now
  const activePause = Option.filter(pause, (p) => running && p.untilMillis > DateTime.toEpochMillis(now))
  return {
    inflight_generations: counts.queued + counts.submitting + counts.submitted + counts.succeeded,
    queued_generations: counts.queued,
    generations: counts,
    generation_engine: running ? "running" : "stopped",
    kie_paused_until: Option.match(activePause, {
      onNone: () => null,
      onSome: (p) => new Date(p.untilMillis).toISOString()
    }),
    ...(Option.isSome(activePause) ? { kie_pause: `${activePause.value.kind}: ${activePause.value.detail}` } : {})
  }
})

/**
 * Provides `GenerationEngineStatus` and registers the `/health` probe (and,
 * when `MetricsRefresh` is present, the in-flight and today's gauges). Build it once per
 * process, outside the leadership scope.
 */
export const layer: Layer.Layer<GenerationEngineStatus, never, Generations | Health> = Layer.effect(
  GenerationEngineStatus,
  Effect.gen(function*() {
    const generations = yield* Generations
    const health = yield* Health
    const state = yield* Layer.build(GenerationEngineStatus.layerState).pipe(
      Effect.map((context) => Context.get(context, GenerationEngineStatus))
    )
    const fields = healthFields.pipe(
      Effect.provideService(Generations, generations),
      Effect.provideService(GenerationEngineStatus, state)
    )
    yield* health.register(fields.pipe(Effect.orElseSucceed(() => ({}))))
    const metrics = yield* Effect.serviceOption(MetricsRefresh)
    if (Option.isSome(metrics)) {
      yield* metrics.value.register(
        generations.inFlight.pipe(
          Effect.flatMap((n) => Metric.update(generationsInFlight, n)),
          Effect.ignore
        )
      )
      // How much of GLOBAL_DAILY_GENERATION_LIMIT today has used.
      yield* metrics.value.register(
        DateTime.now.pipe(
          Effect.flatMap((now) => generations.countSince(DateTime.startOf(now, "day"))),
          Effect.flatMap((n) => Metric.update(generationsToday, n)),
          Effect.ignore
        )
      )
    }
    return state
  })
)
