/**
 * The inbox's group-commit writer on its own, on the real test PostgreSQL:
 * its statement is the inbox's own (`storeUpdates`), behind a gate the test
 * opens, so that stores queue behind a busy writer deterministically. Time is
 * the `TestClock`'s.
 */
import { assert, describe, layer } from "@effect/vitest"
import { Cause, Deferred, Effect, Exit, Fiber, Layer, Scope } from "effect"
import { SqlClient } from "effect/sql/SqlClient"
import { TestClock } from "effect/testing"
import { storeUpdates } from "../src/inbox/sql/store.ts"
import { makeStoreWriter, storeTimeout } from "../src/inbox/StoreWriter.ts"
import type { UpdateEnvelope } from "../src/telegram/TelegramUpdate.ts"
import { message } from "./support/Pipeline.ts"
import { TestConfigLive } from "./support/TestConfig.ts"
import { TestDatabaseLive } from "./support/TestDatabase.ts"

/**
 * A writer in its own scope whose statements wait for `open` before they run,
 * and which records each statement's update ids (as it takes them in hand).
 */
const gatedWriter = Effect.gen(function*() {
  const sql = yield* SqlClient
  yield* sql`DELETE FROM telegram_updates`
  const scope = yield* Scope.make()
  const gate = yield* Deferred.make<void>()
  const statements: Array<ReadonlyArray<number>> = []
  const writer = yield* makeStoreWriter<UpdateEnvelope>({
    insert: (updates) =>
      Effect.sync(() => statements.push(updates.map((update) => update.update_id))).pipe(
        Effect.andThen(Deferred.await(gate)),
        Effect.andThen(storeUpdates(sql, updates))
      )
  }).pipe(Scope.provide(scope))
  const write = (...ids: ReadonlyArray<number>) =>
    Effect.forkChild(Effect.exit(writer.write(ids.map((id) => message(id, id % 3) as UpdateEnvelope))))
  /** Waits (bounded) until the writer has taken `n` statements in hand. */
  const awaitStatements = (n: number) =>
    Effect.gen(function*() {
      for (let round = 0; round < 1000 && statements.length < n; round++) yield* Effect.yieldNow
      assert.isAtLeast(statements.length, n, "statements taken in hand")
    })
  /** A store without a fiber: `done` hears its outcome. */
  const writeUnsafe = (ids: ReadonlyArray<number>, done: (exit: Exit.Exit<number, unknown>) => void) =>
    writer.writeUnsafe(ids.map((id) => message(id, id % 3) as UpdateEnvelope), done)
  return {
    scope,
    awaitStatements,
    write,
    writeUnsafe,
    open: Deferred.succeed(gate, undefined),
    statements: () => statements
  }
})

/** A gated writer holding a store of `updateId` in hand (its statement waits for the gate). */
const writerHolding = (updateId: number) =>
  Effect.gen(function*() {
    const writer = yield* gatedWriter
    const inHand = yield* writer.write(updateId)
    yield* writer.awaitStatements(1)
    return { writer, inHand }
  })

const failureOf = (exit: Exit.Exit<number, unknown>): unknown =>
  Exit.isFailure(exit) ? Cause.squash(exit.cause) : undefined

layer(TestDatabaseLive.pipe(Layer.provide(TestConfigLive())))((it) => {
  describe("StoreWriter", () => {
    it.effect("stores queued behind a busy writer share the next statement; each caller hears its own count", () =>
      Effect.gen(function*() {
        const { inHand: first, writer } = yield* writerHolding(1)
        // The writer holds the first store; these queue behind it.
        const queued = [yield* writer.write(2, 3), yield* writer.write(3, 4), yield* writer.write(1)]
        for (let i = 0; i < 10; i++) yield* Effect.yieldNow
        yield* writer.open
        assert.deepStrictEqual(yield* Fiber.join(first), Exit.succeed(1))
        // 3 is new once (for the first caller naming it); 1 was stored by the first statement.
        assert.deepStrictEqual(yield* Effect.forEach(queued, Fiber.join), [
          Exit.succeed(2),
          Exit.succeed(1),
          Exit.succeed(0)
        ])
        assert.deepStrictEqual(writer.statements(), [[1], [2, 3, 3, 4, 1]])

        const again = yield* writer.write(1, 2)
        assert.deepStrictEqual(yield* Fiber.join(again), Exit.succeed(0))
        const fresh = yield* writer.write(5)
        assert.deepStrictEqual(yield* Fiber.join(fresh), Exit.succeed(1))
        yield* Scope.close(writer.scope, Exit.void)
      }))

    it.effect("stores without a fiber (writeUnsafe) join the same statements and hear their counts", () =>
      Effect.gen(function*() {
        const { inHand: first, writer } = yield* writerHolding(30)
        const heard: Array<Exit.Exit<number, unknown>> = []
        writer.writeUnsafe([31, 32], (exit) => heard.push(exit))
        const effectStore = yield* writer.write(32, 33)
        for (let i = 0; i < 10; i++) yield* Effect.yieldNow
        writer.writeUnsafe([30], (exit) => heard.push(exit))
        writer.writeUnsafe([], (exit) => heard.push(exit))
        assert.deepStrictEqual(heard, [Exit.succeed(0)], "an empty store is done at once, the others wait")
        yield* writer.open
        assert.deepStrictEqual(yield* Fiber.join(first), Exit.succeed(1))
        assert.deepStrictEqual(yield* Fiber.join(effectStore), Exit.succeed(1))
        for (let i = 0; i < 100 && heard.length < 3; i++) yield* Effect.yieldNow
        // 32 is new once, for the first store naming it; 30 was stored by the first statement.
        assert.deepStrictEqual(heard, [Exit.succeed(0), Exit.succeed(2), Exit.succeed(0)])
        assert.deepStrictEqual(writer.statements(), [[30], [31, 32, 32, 33, 30]])
        yield* Scope.close(writer.scope, Exit.void)
        writer.writeUnsafe([34], (exit) => heard.push(exit))
        assert.strictEqual(
          (failureOf(heard[3]!) as { _tag?: string } | undefined)?._tag,
          "InboxClosed",
          "after shutdown: InboxClosed, at once"
        )
      }))

    it.effect("a statement that does not commit in time fails its stores", () =>
      Effect.gen(function*() {
        const { inHand: stuck, writer } = yield* writerHolding(10)
        yield* TestClock.adjust(storeTimeout)
        const exit = yield* Fiber.join(stuck)
        assert.isTrue(Cause.isTimeoutError(failureOf(exit)), String(failureOf(exit)))
        yield* Scope.close(writer.scope, Exit.void)
      }))

    it.effect("closing the writer fails the stores in hand and the ones still queued", () =>
      Effect.gen(function*() {
        const { inHand, writer } = yield* writerHolding(20)
        const queued = yield* writer.write(21)
        for (let i = 0; i < 10; i++) yield* Effect.yieldNow
        yield* Scope.close(writer.scope, Exit.void)
        for (const fiber of [inHand, queued]) {
          const failure = failureOf(yield* Fiber.join(fiber))
          assert.strictEqual((failure as { _tag?: string } | undefined)?._tag, "InboxClosed")
        }
        assert.deepStrictEqual(writer.statements(), [[20]], "the queued store was never taken")
        const sql = yield* SqlClient
        assert.deepStrictEqual(yield* sql`SELECT update_id FROM telegram_updates`, [], "nothing was written")
      }))
  })
})
