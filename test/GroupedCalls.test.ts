/**
 * `platform/GroupedCalls.ts` on its own: callers that arrive while an
 * execution is in flight share the next one and each gets its own result; a
 * fault of the rows themselves is retried request by request; closing the
 * scope fails what is still queued.
 */
import { assert, describe, it } from "@effect/vitest"
import { Deferred, Effect, Exit, Fiber, Scope } from "effect"
import { GroupedCallsClosed, makeGroupedCalls } from "../src/platform/GroupedCalls.ts"

/** What the driver fails with when a row breaks a constraint (SQLSTATE 23505), as `isRowFault` reads it. */
const uniqueViolation = { _tag: "SqlError", reason: { cause: { code: "23505" } } }

/**
 * Grouped calls whose run records each group of inputs, and holds a group
 * that contains `held` until `gate` opens (so later calls queue behind it),
 * then answers with `answer`.
 */
const heldCalls = <O, E>(
  held: number,
  answer: (inputs: ReadonlyArray<number>) => Effect.Effect<ReadonlyArray<O>, E>
) =>
  Effect.gen(function*() {
    const runs: Array<ReadonlyArray<number>> = []
    const gate = yield* Deferred.make<void>()
    const call = yield* makeGroupedCalls({
      maxPerCall: 10,
      run: (inputs: ReadonlyArray<number>) =>
        Effect.gen(function*() {
          runs.push(inputs)
          if (inputs.includes(held)) yield* Deferred.await(gate)
          return yield* answer(inputs)
        })
    })
    return { call, gate, runs }
  })

describe("GroupedCalls", () => {
  it.effect("calls made while one runs share the next run, and each gets its own result", () =>
    Effect.gen(function*() {
      const { call, gate, runs } = yield* heldCalls(1, (inputs) => Effect.succeed(inputs.map((n) => n * 10)))
      const first = yield* Effect.forkChild(call(1))
      yield* Effect.yieldNow
      const others = yield* Effect.forkChild(Effect.all([call(2), call(3), call(4)], { concurrency: "unbounded" }))
      yield* Effect.yieldNow
      yield* Deferred.succeed(gate, undefined)
      assert.strictEqual(yield* Fiber.join(first), 10)
      assert.deepStrictEqual(yield* Fiber.join(others), [20, 30, 40])
      assert.deepStrictEqual(runs, [[1], [2, 3, 4]])
    }))

  it.effect("a fault of one request's rows fails only that request", () =>
    Effect.gen(function*() {
      const { call, gate, runs } = yield* heldCalls(
        0,
        (inputs) => inputs.includes(13) ? Effect.fail(uniqueViolation) : Effect.succeed(inputs.map((n) => n + 1))
      )
      const opener = yield* Effect.forkChild(call(0))
      yield* Effect.yieldNow
      const batch = yield* Effect.forkChild(
        Effect.all([call(12), call(13), call(14)].map(Effect.exit), { concurrency: "unbounded" })
      )
      yield* Effect.yieldNow
      yield* Deferred.succeed(gate, undefined)
      yield* Fiber.join(opener)
      const [a, b, c] = yield* Fiber.join(batch)
      assert.deepStrictEqual(a, Exit.succeed(13))
      assert.isTrue(Exit.isFailure(b!))
      assert.deepStrictEqual(c, Exit.succeed(15))
      assert.deepStrictEqual(runs, [[0], [12, 13, 14], [12], [13], [14]])
    }))

  it.effect("closing the scope fails the calls still waiting", () =>
    Effect.gen(function*() {
      const scope = yield* Scope.make()
      const call = yield* makeGroupedCalls({
        maxPerCall: 10,
        run: (inputs: ReadonlyArray<number>) => Effect.as(Effect.never, inputs)
      }).pipe(Scope.provide(scope))
      const running = yield* Effect.forkChild(Effect.exit(call(1)))
      yield* Effect.yieldNow
      const queued = yield* Effect.forkChild(Effect.exit(call(2)))
      yield* Effect.yieldNow
      yield* Scope.close(scope, Exit.void)
      for (const fiber of [running, queued]) {
        const exit = yield* Fiber.join(fiber)
        assert.isTrue(Exit.isFailure(exit) && exit.cause.toString().includes("GroupedCallsClosed"))
      }
      const after = yield* Effect.exit(call(3))
      assert.deepStrictEqual(after, Exit.fail(new GroupedCallsClosed()))
    }))
})
