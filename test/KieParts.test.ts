/**
 * Parts of the Kie client driven alone: the `kie_tasks` statements on real
 * PostgreSQL (what a callback does to a row), the in-memory callback signals,
 * and the pure retry decision.
 */
import { assert, describe, it, layer } from "@effect/vitest"
import { PgClient } from "@effect/sql-pg"
import { Duration, Effect, Option, PubSub } from "effect"
import { SqlClient } from "effect/sql/SqlClient"
import { KieCreateTaskUncertain, KieRateLimited, KieUnauthorized } from "../src/kie/KieErrors.ts"
import { makeCallbackSignals } from "../src/kie/KieCallbackSignals.ts"
import { isRetryable } from "../src/kie/KieRetry.ts"
import { bind } from "../src/kie/sql/bind.ts"
import { findTaskIdByRef } from "../src/kie/sql/findByRef.ts"
import { forget } from "../src/kie/sql/forget.ts"
import { lookup, lookupMany } from "../src/kie/sql/lookup.ts"
import { prune } from "../src/kie/sql/prune.ts"
import { record, type RecordCallback } from "../src/kie/sql/record.ts"
import { register } from "../src/kie/sql/register.ts"
import { KieTestDatabase } from "./support/KieTestStack.ts"

const data = (url: string) => ({ state: "success", resultJson: JSON.stringify({ resultUrls: [url] }) })

const callback = (taskId: string, options: Partial<RecordCallback> = {}): RecordCallback => ({
  taskId,
  ref: undefined,
  state: "success",
  data: data("https://cdn.example/a.png"),
  signatureVerified: false,
  ...options
})

layer(KieTestDatabase, { timeout: "60 seconds" })("kie_tasks statements", (it) => {
  it.effect("record: unknown task, hint, trusted by ref, then duplicates only count", () =>
    Effect.gen(function*() {
      const sql = yield* SqlClient
      const pg = yield* PgClient.PgClient
      assert.strictEqual(yield* record(pg, callback("task_none")), "unknown", "no row: ignored")
      assert.isTrue(Option.isNone(yield* lookup(sql, "task_none")))

      yield* register(sql, "ref-a")
      yield* register(sql, "ref-a")
      yield* bind(sql, "ref-a", "task_a")
      assert.strictEqual(yield* record(pg, callback("task_a")), "hint", "no ref, no signature: a hint")
      assert.strictEqual(yield* record(pg, callback("task_a")), "duplicate", "a second hint only counts")
      const hint = yield* lookup(sql, "task_a")
      assert.isTrue(Option.isSome(hint) && !hint.value.trusted && hint.value.count === 2)

      const real = data("https://cdn.example/real.png")
      assert.strictEqual(yield* record(pg, callback("task_a", { ref: "ref-a", data: real })), "stored")
      assert.strictEqual(yield* record(pg, callback("task_a", { signatureVerified: true })), "duplicate")
      const stored = yield* lookup(sql, "task_a")
      if (Option.isNone(stored)) return assert.fail("stored")
      assert.isTrue(stored.value.trusted)
      assert.strictEqual(stored.value.count, 4)
      assert.deepStrictEqual(stored.value.data, real, "the first trusted callback is kept")
    }))

  it.effect("record: a lost createTask answer is recovered by the ref; forget keeps rows with a task id", () =>
    Effect.gen(function*() {
      const sql = yield* SqlClient
      const pg = yield* PgClient.PgClient
      yield* register(sql, "ref-lost")
      assert.isTrue(Option.isNone(yield* findTaskIdByRef(sql, "ref-lost")))
      assert.strictEqual(yield* record(pg, callback("task_lost", { ref: "ref-lost" })), "stored")
      assert.deepStrictEqual(yield* findTaskIdByRef(sql, "ref-lost"), Option.some("task_lost"))
      yield* forget(sql, "ref-lost")
      assert.deepStrictEqual(yield* findTaskIdByRef(sql, "ref-lost"), Option.some("task_lost"))

      yield* register(sql, "ref-nothing")
      yield* forget(sql, "ref-nothing")
      assert.strictEqual(yield* record(pg, callback("task_other", { ref: "ref-nothing" })), "unknown")

      const found = yield* lookupMany(sql, ["task_lost", "task_none"])
      assert.deepStrictEqual([...found.keys()], ["task_lost"])
      assert.strictEqual((yield* lookupMany(sql, [])).size, 0)

      yield* sql`UPDATE kie_tasks SET created_at = now() - interval '8 days' WHERE ref = 'ref-lost'`
      assert.strictEqual(yield* prune(sql, Duration.days(7)), 1)
      assert.isTrue(Option.isNone(yield* findTaskIdByRef(sql, "ref-lost")))
    }))
})

describe("KieCallbackSignals", () => {
  it.effect("wake tells every subscriber that task's callback arrived; wakeAll tells them to resync", () =>
    Effect.scoped(Effect.gen(function*() {
      const signals = yield* makeCallbackSignals
      const first = yield* signals.subscribe
      const second = yield* signals.subscribe
      yield* signals.wake("a")
      yield* signals.wakeAll
      for (const subscription of [first, second]) {
        assert.deepStrictEqual(yield* PubSub.takeAll(subscription), [
          { _tag: "Arrived", taskId: "a" },
          { _tag: "Resync" }
        ])
      }
    })))

  it.effect("a signal after subscribing and before taking is not missed; one before subscribing is not heard", () =>
    Effect.scoped(Effect.gen(function*() {
      const signals = yield* makeCallbackSignals
      yield* signals.wake("before")
      const subscription = yield* signals.subscribe
      yield* signals.wake("t")
      assert.deepStrictEqual(yield* PubSub.take(subscription), { _tag: "Arrived", taskId: "t" })
      assert.strictEqual(yield* PubSub.remaining(subscription), 0, "nothing else, not the signal before")
    })))
})

describe("the retry decision", () => {
  it("only a Kie error that says so is retried", () => {
    assert.isTrue(isRetryable(new KieRateLimited({ operation: "createTask", message: "m" })))
    assert.isFalse(isRetryable(new KieUnauthorized({ operation: "createTask", message: "m" })))
    assert.isFalse(
      isRetryable(new KieCreateTaskUncertain({ reason: "timeout", ref: "r", recoverable: true, message: "m" })),
      "a createTask that may have created a task"
    )
    assert.isFalse(isRetryable("a caller's own error"))
  })
})
