/**
 * The generation fields of `GET /health`: counted from the database on any
 * instance, plus the engine's state where it runs.
 */
import { assert, layer } from "@effect/vitest"
import { Duration, Effect, Layer, Option, Ref } from "effect"
import { Generations } from "../src/generations/Generations.ts"
import * as GenerationsHealth from "../src/generations/GenerationsHealth.ts"
import { Health } from "../src/observability/Health.ts"
import { TestConfigLive } from "./support/TestConfig.ts"
import { TestDatabaseLive } from "./support/TestDatabase.ts"

const Live = GenerationsHealth.layer.pipe(
  Layer.provideMerge(Layer.mergeAll(Generations.layer, Health.layer)),
  Layer.provideMerge(TestDatabaseLive),
  Layer.provide(TestConfigLive())
)

const input = (userId: number, sourceUpdateId: number) => ({
  userId,
  chatId: userId,
  lang: "ru" as const,
  prompt: "p",
  aspectRatio: "1:1" as const,
  sourceUpdateId
})

layer(Live, { timeout: "60 seconds" })("GenerationsHealth", (it) => {
  it.effect("/health counts unfinished generations by status; the engine's state and pause where it runs", () =>
    Effect.gen(function*() {
      const generations = yield* Generations
      const health = yield* Health
      const status = yield* GenerationsHealth.GenerationEngineStatus
      const limits = { maxActivePerUser: 5, dailyLimit: 0, timeout: Duration.minutes(5) }
      const a = yield* generations.create(input(1, 1), limits)
      yield* generations.create(input(1, 2), limits)
      const c = yield* generations.create(input(2, 3), limits)
      yield* generations.markSubmitting(a.generation.id, "ref")
      yield* generations.markFailed(c.generation.id, "x", "y")

      const passive = yield* health.report
      assert.strictEqual(passive.inflight_generations, 2)
      assert.strictEqual(passive.queued_generations, 1)
      assert.deepStrictEqual(passive.generations, { queued: 1, submitting: 1, submitted: 0, succeeded: 0 })
      assert.strictEqual(passive.generation_engine, "stopped")
      assert.isNull(passive.kie_paused_until)

      yield* Ref.set(status.running, true)
      yield* Ref.set(
        status.pause,
        Option.some({
          untilMillis: 120_000,
          kind: "account" as const,
          code: "KieInsufficientCredits",
          detail: "Kie createTask answered 402",
          userReason: { ru: "r", en: "e" }
        })
      )
      const active = yield* health.report
      assert.strictEqual(active.generation_engine, "running")
      assert.strictEqual(active.kie_paused_until, "1970-01-01T00:02:00.000Z")
      assert.strictEqual(active.kie_pause, "account: Kie createTask answered 402")
      assert.notInclude(JSON.stringify(active), "kie-test-key")
    }))
})
