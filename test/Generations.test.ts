import { assert, describe, layer } from "@effect/vitest"
import { DateTime, Duration, Effect, Layer, Option } from "effect"
import { TestClock } from "effect/testing"
import { Generations } from "../src/generations/Generations.ts"
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

    it.effect("one per user at a time: a user's generations already at Kie count as turns taken", () =>
      Effect.gen(function*() {
        const generations = yield* Generations
        const wide = { ...limits, maxActivePerUser: 10, dailyLimit: 0 }
        const a1 = yield* generations.create(input(300, 300), wide)
        const a2 = yield* generations.create(input(300, 301), wide)
        yield* TestClock.adjust("1 second")
        const b1 = yield* generations.create(input(400, 302), wide)
        const ours = (rows: ReadonlyArray<{ readonly id: string }>) =>
          rows.map((g) => g.id).filter((id) => [a1, a2, b1].some((r) => r.generation.id === id))
        assert.deepStrictEqual(ours(yield* generations.nextQueued(50, [])), [a1, b1, a2].map((r) => r.generation.id))
        // a1 goes to Kie: a2 is user 300's second turn, so b1 (younger) goes first.
        assert.isTrue(yield* generations.markSubmitting(a1.generation.id, "ref-a1"))
        assert.deepStrictEqual(ours(yield* generations.nextQueued(50, [])), [b1, a2].map((r) => r.generation.id))
        const positions = new Map((yield* generations.queuePositions).map((p) => [p.id, p.position]))
        assert.isBelow(positions.get(b1.generation.id)!, positions.get(a2.generation.id)!)
        // Finished at Kie (succeeded): the turn is over, age decides again.
        yield* generations.markSubmitted(a1.generation.id, "task-a1", DateTime.makeUnsafe(0))
        yield* generations.markSucceeded(a1.generation.id, ["http://x/a1.png"])
        assert.deepStrictEqual(ours(yield* generations.nextQueued(50, [])), [a2, b1].map((r) => r.generation.id))
        for (const r of [a2, b1]) yield* generations.markFailed(r.generation.id, "test", "cleanup")
      }))

    it.effect("sentSince: when createTask requests were sent after the given instant, oldest first", () =>
      Effect.gen(function*() {
        const generations = yield* Generations
        const many = { maxActivePerUser: 10, dailyLimit: 0, timeout: Duration.minutes(5) }
        // Away from the rows earlier tests sent.
        yield* TestClock.adjust("1 hour")
        const start = yield* DateTime.now
        const [a, b, never] = yield* Effect.forEach([600, 601, 602], (u) => generations.create(input(u, u), many))
        yield* generations.markSubmitting(a!.generation.id, "ref-a")
        yield* TestClock.adjust("4 seconds")
        yield* generations.markSubmitting(b!.generation.id, "ref-b")
        yield* generations.markSubmitted(b!.generation.id, "task-b", DateTime.makeUnsafe(0))
        assert.strictEqual(never!.generation.status, "queued")
        const sent = (since: DateTime.Utc) =>
          Effect.map(generations.sentSince(since), (times) => times.map((t) => DateTime.toEpochMillis(t)))
        const t0 = DateTime.toEpochMillis(start)
        assert.deepStrictEqual(yield* sent(DateTime.subtractDuration(start, Duration.seconds(1))), [t0, t0 + 4_000])
        assert.deepStrictEqual(yield* sent(start), [t0 + 4_000], "strictly after")
        assert.deepStrictEqual(yield* sent(DateTime.addDuration(start, Duration.seconds(5))), [])
      }))

    it.effect("deadlines: overdue once past deadline_at; a succeeded one only after the grace", () =>
      Effect.gen(function*() {
        const generations = yield* Generations
        const short = { maxActivePerUser: 10, dailyLimit: 0, timeout: Duration.seconds(60) }
        const queued = yield* generations.create(input(500, 500), short)
        const done = yield* generations.create(input(501, 501), short)
        yield* generations.markSubmitting(done.generation.id, "ref-done")
        yield* generations.markSubmitted(done.generation.id, "task-done", DateTime.makeUnsafe(0))
        yield* generations.markSucceeded(done.generation.id, ["http://x/done.png"])
        const overdueIds = Effect.map(generations.overdue(100, Duration.minutes(10)), (rows) => rows.map((g) => g.id))
        assert.notInclude(yield* overdueIds, queued.generation.id)
        yield* TestClock.adjust("61 seconds")
        assert.include(yield* overdueIds, queued.generation.id)
        assert.notInclude(yield* overdueIds, done.generation.id, "its picture exists: it gets the grace")
        yield* TestClock.adjust("10 minutes")
        assert.include(yield* overdueIds, done.generation.id)
        for (const r of [queued, done]) yield* generations.markFailed(r.generation.id, "timeout", "test", "reason")
        const failed = yield* generations.find(queued.generation.id)
        assert.strictEqual(Option.getOrThrow(failed).failReason, "reason")
      }))

    it.effect("status messages: markNotified consumes the one that became the notice; a late one is open until cleared", () =>
      Effect.gen(function*() {
        const generations = yield* Generations
        const { generation } = yield* generations.create(input(600, 600), { ...limits, dailyLimit: 0 })
        yield* generations.setStatusMessage(generation.id, 41, "⏳")
        yield* generations.markFailed(generation.id, "x", "y", "z")
        const open = Effect.map(generations.openStatusMessages(100), (rows) => rows.map((g) => g.id))
        assert.notInclude(yield* open, generation.id, "not told yet: the notice will use it")
        yield* generations.markNotified(generation.id, 41)
        const told = Option.getOrThrow(yield* generations.find(generation.id))
        assert.isNull(told.statusMessageId)
        assert.isTrue(Option.isSome(told.notifiedAt))
        // The chat flow records a status message after all: open until the engine removes it.
        yield* generations.setStatusMessage(generation.id, 42, "⏳")
        assert.include(yield* open, generation.id)
        yield* generations.clearStatusMessage(generation.id, 41)
        assert.include(yield* open, generation.id, "clearing another message id changes nothing")
        yield* generations.clearStatusMessage(generation.id, 42)
        assert.notInclude(yield* open, generation.id)
      }))
  })
})
