import { assert, describe, it } from "@effect/vitest"
import { Deferred, Effect, Fiber, Layer } from "effect"
import { SqlClient } from "effect/sql/SqlClient"
import { Health, HealthRoute } from "../src/observability/Health.ts"
import { Inbox } from "../src/inbox/Inbox.ts"
import { MetricsRefresh } from "../src/observability/Metrics.ts"
import { message } from "./support/Pipeline.ts"
import { TestConfigLive } from "./support/TestConfig.ts"
import { TestDatabaseLive } from "./support/TestDatabase.ts"
import { serverUrl, TestHttpServerLive } from "./support/TestHttpServer.ts"

const HealthLive = TestHttpServerLive(HealthRoute).pipe(
  Layer.provideMerge(Inbox.layer),
  Layer.provideMerge(Layer.mergeAll(Health.layer, MetricsRefresh.layer)),
  Layer.provideMerge(TestDatabaseLive),
  Layer.provideMerge(TestConfigLive())
)

const getHealth = (url: string) =>
  Effect.promise(async () => {
    const started = performance.now()
    const response = await fetch(`${url}/health`)
    return {
      status: response.status,
      body: (await response.json()) as Record<string, any>,
      ms: performance.now() - started
    }
  })

describe("/health inbox fields", () => {
  it.live("queue_depth counts stored, unfinished updates; dead_updates and the oldest pending age are reported", () =>
    Effect.gen(function*() {
      const sql = yield* SqlClient
      const inbox = yield* Inbox
      const url = yield* serverUrl
      // Read in-process: GET /health reuses its database reading for a second, and the next one must be fresh.
      const empty = yield* (yield* Health).report
      assert.strictEqual(empty.queue_depth, 0)
      assert.strictEqual(empty.dead_updates, 0)
      assert.strictEqual(empty.oldest_pending_age_s, 0)

      yield* inbox.store([message(1, 1), message(2, 1), message(3, 2), message(4, 3), message(5, 3)] as any)
      yield* sql`UPDATE telegram_updates SET status = 'processing', claimed_by = 't' WHERE update_id = 2`
      yield* sql`UPDATE telegram_updates SET status = 'done' WHERE update_id = 3`
      yield* sql`UPDATE telegram_updates SET status = 'dead' WHERE update_id = 4`
      yield* sql`UPDATE telegram_updates SET received_at = now() - interval '42 seconds' WHERE update_id = 1`
      const health = yield* getHealth(url)
      assert.strictEqual(health.status, 200)
      assert.strictEqual(health.body.queue_depth, 3, "pending 1 and 5, processing 2")
      assert.strictEqual(health.body.updates_processing, 1)
      assert.strictEqual(health.body.dead_updates, 1)
      assert.isAtLeast(health.body.oldest_pending_age_s, 42)
      assert.isBelow(health.body.oldest_pending_age_s, 60)
      assert.strictEqual(health.body.status, "ok")
    }).pipe(Effect.provide(HealthLive)))

  it.live("a database that hangs does not hang /health: the inbox fields are left out after about a second", () =>
    Effect.gen(function*() {
      const sql = yield* SqlClient
      const url = yield* serverUrl
      const locked = yield* Deferred.make<void>()
      const unlock = yield* Deferred.make<void>()
      // Hold an exclusive lock on the table: every inbox query waits behind it.
      const holder = yield* sql.withTransaction(Effect.gen(function*() {
        yield* sql`LOCK TABLE telegram_updates IN ACCESS EXCLUSIVE MODE`
        yield* Deferred.succeed(locked, undefined)
        yield* Deferred.await(unlock)
      })).pipe(Effect.forkChild)
      yield* Deferred.await(locked)
      const health = yield* getHealth(url)
      yield* Deferred.succeed(unlock, undefined)
      yield* Fiber.join(holder)
      assert.strictEqual(health.status, 200)
      assert.strictEqual(health.body.status, "ok")
      assert.isUndefined(health.body.dead_updates, "the inbox probe was skipped")
      assert.isBelow(health.ms, 5_000)
    }).pipe(Effect.provide(HealthLive)))
})
