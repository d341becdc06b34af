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

/** Grouped calls in `scope` whose runs never end: requests stay in hand or queued until it closes. */
const neverEndingCalls = (scope: Scope.Scope) =>
  makeGroupedCalls({
    maxPerCall: 10,
    run: (inputs: ReadonlyArray<number>) => Effect.as(Effect.never, inputs)
  }).pipe(Scope.provide(scope))

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

  it.effect("callback requests share the executions of Effect calls, and each hears its own result once", () =>
    Effect.gen(function*() {
      const { call, gate, runs } = yield* heldCalls(1, (inputs) => Effect.succeed(inputs.map((n) => n * 10)))
      const first = yield* Effect.forkChild(call(1))
      for (let i = 0; i < 100 && runs.length === 0; i++) yield* Effect.yieldNow
      assert.deepStrictEqual(runs, [[1]], "the first call runs alone and holds the next ones")
      const heard: Array<[number, Exit.Exit<number, unknown>]> = []
      call.offerUnsafe(2, (exit) => heard.push([2, exit]))
      const effectCall = yield* Effect.forkChild(call(3))
      yield* Effect.yieldNow
      call.offerUnsafe(4, (exit) => heard.push([4, exit]))
      assert.deepStrictEqual(heard, [], "nobody hears before the execution ran")
      yield* Deferred.succeed(gate, undefined)
      assert.strictEqual(yield* Fiber.join(first), 10)
      assert.strictEqual(yield* Fiber.join(effectCall), 30)
      for (let i = 0; i < 10 && heard.length < 2; i++) yield* Effect.yieldNow
      assert.deepStrictEqual(heard, [[2, Exit.succeed(20)], [4, Exit.succeed(40)]])
      assert.deepStrictEqual(runs, [[1], [2, 3, 4]])
    }))

  it.effect("awaitIdle waits until every request has its result, also one whose caller was interrupted", () =>
    Effect.gen(function*() {
      const { call, gate, runs } = yield* heldCalls(1, (inputs) => Effect.succeed(inputs.map((n) => n * 10)))
      const atFirst = yield* Effect.forkChild(call.awaitIdle)
      for (let i = 0; i < 10 && atFirst.pollUnsafe() === undefined; i++) yield* Effect.yieldNow
      assert.isDefined(atFirst.pollUnsafe(), "nothing asked for yet: idle at once")
      const first = yield* Effect.forkChild(call(1))
      for (let i = 0; i < 100 && runs.length === 0; i++) yield* Effect.yieldNow
      const abandoned = yield* Effect.forkChild(call(2))
      yield* Effect.yieldNow
      yield* Fiber.interrupt(abandoned)
      const idle = yield* Effect.forkChild(call.awaitIdle)
      for (let i = 0; i < 10; i++) yield* Effect.yieldNow
      assert.isUndefined(idle.pollUnsafe(), "1 is in hand and 2 queued")
      yield* Deferred.succeed(gate, undefined)
      yield* Fiber.join(idle)
      assert.strictEqual(yield* Fiber.join(first), 10)
      assert.deepStrictEqual(runs, [[1], [2]], "the abandoned request still ran")
    }))

  it.effect("a callback request after the scope closed hears GroupedCallsClosed at once", () =>
    Effect.gen(function*() {
      const scope = yield* Scope.make()
      const call = yield* neverEndingCalls(scope)
      const heard: Array<Exit.Exit<never, unknown>> = []
      call.offerUnsafe(1, (exit) => heard.push(exit as Exit.Exit<never, unknown>))
      yield* Effect.yieldNow
      yield* Scope.close(scope, Exit.void)
      call.offerUnsafe(2, (exit) => heard.push(exit as Exit.Exit<never, unknown>))
      assert.deepStrictEqual(heard, [Exit.fail(new GroupedCallsClosed()), Exit.fail(new GroupedCallsClosed())])
    }))

  it.effect("closing the scope fails the calls still waiting", () =>
    Effect.gen(function*() {
      const scope = yield* Scope.make()
      const call = yield* neverEndingCalls(scope)
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
