import { assert, describe, layer } from "@effect/vitest"
import { Duration, Effect, Layer, Option } from "effect"
import { Generations } from "../src/Generations.ts"
import { TestConfigLive } from "./support/TestConfig.ts"
import { TestDatabaseLive } from "./support/TestDatabase.ts"

const Live = Generations.layer.pipe(Layer.provideMerge(TestDatabaseLive), Layer.provide(TestConfigLive()))
const limits = { maxActivePerUser: 2, dailyLimit: 3, timeout: Duration.minutes(5) }
const input = (userId: number, sourceUpdateId: number) => ({
  userId,
  chatId: userId,
  lang: "ru" as const,
  prompt: "кот",
  aspectRatio: "1:1" as const,
  sourceUpdateId
})

describe("Generations", () => {
  layer(Live, { timeout: "60 seconds" })((it) => {
    it.effect("create is idempotent per source update and enforces the limits", () =>
      Effect.gen(function*() {
        const generations = yield* Generations
        const first = yield* generations.create(input(1, 10), limits)
        assert.isTrue(first.created)
        assert.strictEqual(first.generation.status, "queued")
        const again = yield* generations.create(input(1, 10), limits)
        assert.isFalse(again.created)
        assert.strictEqual(again.generation.id, first.generation.id)

        yield* generations.create(input(1, 11), limits)
        const busy = yield* generations.create(input(1, 12), limits).pipe(Effect.flip)
        assert.strictEqual(busy._tag, "GenerationLimitReached")
        if (busy._tag === "GenerationLimitReached") assert.strictEqual(busy.kind, "busy")

        // Finishing one frees a slot; the daily limit (3) still counts it.
        assert.isTrue(yield* generations.markFailed(first.generation.id, "x", "y"))
        const third = yield* generations.create(input(1, 13), limits)
        assert.isTrue(third.created)
        yield* generations.markSubmitting(third.generation.id, "ref")
        yield* generations.markSubmitted(third.generation.id, "task-1", third.generation.createdAt)
        yield* generations.markSucceeded(third.generation.id, ["http://x/1.png"])
        yield* generations.markDelivered(third.generation.id)
        const fourth = yield* generations.create(input(1, 14), limits)
        assert.isTrue(fourth.created, "failed generations do not count against the daily limit")
        const daily = yield* generations.create(input(1, 15), { ...limits, maxActivePerUser: 10 }).pipe(Effect.flip)
        if (daily._tag === "GenerationLimitReached") assert.strictEqual(daily.kind, "daily")
        else assert.fail("expected the daily limit")
        const found = yield* generations.findByTaskId("task-1")
        assert.deepStrictEqual(Option.map(found, (g) => g.resultUrls), Option.some(["http://x/1.png"]))
      }))

    it.effect("queues fairly: oldest first, one per user per round", () =>
      Effect.gen(function*() {
        const generations = yield* Generations
        const wide = { ...limits, maxActivePerUser: 10, dailyLimit: 0 }
        const a1 = yield* generations.create(input(100, 100), wide)
        const a2 = yield* generations.create(input(100, 101), wide)
        const a3 = yield* generations.create(input(100, 102), wide)
        const b1 = yield* generations.create(input(200, 103), wide)
        const next = yield* generations.nextQueued(10, [])
        const ids = next.filter((g) => g.userId === 100 || g.userId === 200).map((g) => g.id)
        assert.deepStrictEqual(ids, [a1, b1, a2, a3].map((r) => r.generation.id))
        const positions = yield* generations.queuePositions
        const byId = new Map(positions.map((p) => [p.id, p.position]))
        assert.isBelow(byId.get(b1.generation.id)!, byId.get(a2.generation.id)!)
      }))
  })
})
