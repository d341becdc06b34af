/**
 * Grouped calls: concurrent callers of one operation share one execution of
 * it (one statement, one round trip, one transaction), and each still gets
 * its own result only once that execution is over. The pattern of the
 * inbox's group commit, for any operation that takes a list.
 *
 * When to use: a per-item database write or read that many fibers make at
 * once (the dispatcher's finishes, the chat flow's session reads), where a
 * round trip and a transaction per item cost more CPU than the item itself.
 *
 * Details: one fiber takes everything queued (up to `maxPerCall` requests)
 * and runs `run` on it; requests that arrive meanwhile queue for the next
 * call. A request that finds the fiber idle runs at once, alone: no waiting
 * for company, so a quiet system pays no latency. When a call with several
 * requests fails because of its rows (SQLSTATE class 22 or 23: a data or
 * integrity error), each request is run again alone, so one bad item never
 * fails its neighbours; any other failure fails every request of the call.
 *
 * A request joins either as an Effect (`call(input)`: the caller's fiber
 * waits) or with a callback (`call.offerUnsafe(input, done)`: no fiber and no
 * Effect per request, for a hot path answered from plain Node callbacks such
 * as the webhook's direct route). Both share the same executions.
 *
 * Gotchas: `run` must answer one result per input, in input order. Closing
 * the scope fails every request still queued or in hand with
 * `GroupedCallsClosed`; nobody waits on a call that will never run. A
 * callback runs on the grouping fiber: it must be quick and must not throw.
 * A caller that is interrupted leaves its request queued: it still runs
 * (`awaitIdle` waits for it), and its result goes nowhere.
 */
import { Cause, Data, Deferred, Effect, Exit, Predicate, Queue, type Scope } from "effect"

/** The grouped calls were shut down (their scope closed) before this request ran. */
export class GroupedCallsClosed extends Data.TaggedError("GroupedCallsClosed")<{}> {}

/**
 * A grouped operation: `call(input)` joins the next shared execution and gets
 * its own result; `call.offerUnsafe(input, done)` joins it without a fiber
 * and hears its result through `done` (called exactly once, maybe at once
 * with `GroupedCallsClosed` when the calls are shut down).
 */
export interface GroupedCall<I, O, E> {
  (input: I): Effect.Effect<O, E | GroupedCallsClosed>
  readonly offerUnsafe: (input: I, done: (exit: Exit.Exit<O, E | GroupedCallsClosed>) => void) => void
  /**
   * Waits until every request made so far has its result: none queued, none
   * in hand. A request whose caller was interrupted still runs, and counts.
   */
  readonly awaitIdle: Effect.Effect<void>
}

/** What to group. */
export interface GroupedCallsOptions<I, O, E> {
  /** One execution for any number of inputs; one output per input, in input order. */
  readonly run: (inputs: ReadonlyArray<I>) => Effect.Effect<ReadonlyArray<O>, E>
  /** Requests sharing one execution at most (bounds a statement's parameters). */
  readonly maxPerCall: number
}

interface Request<I, O, E> {
  readonly input: I
  /** Hears the request's result, once (through `settle`). */
  readonly done: (exit: Exit.Exit<O, E | GroupedCallsClosed>) => void
  /** Whether it has heard it. */
  settled: boolean
}

/**
 * A failure caused by the rows themselves (SQLSTATE class 22, data exception,
 * or 23, integrity violation), not by the database being unavailable: worth
 * running each request alone.
 */
export const isRowFault = (cause: Cause.Cause<unknown>): boolean => {
  const error = Cause.squash(cause)
  if (!Predicate.isTagged(error, "SqlError")) return false
  const reason = (error as { reason?: { cause?: { code?: unknown } } }).reason
  const code = reason?.cause?.code
  return typeof code === "string" && (code.startsWith("22") || code.startsWith("23"))
}

/** Starts the grouping fiber in the current scope and returns the grouped call. */
export const makeGroupedCalls = <I, O, E>(
  options: GroupedCallsOptions<I, O, E>
): Effect.Effect<GroupedCall<I, O, E>, never, Scope.Scope> =>
  Effect.gen(function*() {
    const requests = yield* Queue.unbounded<Request<I, O, E>>()
    const closed = Exit.fail(new GroupedCallsClosed())
    /** Requests offered that have not heard their result yet, and who waits for none to be left. */
    let outstanding = 0
    let idle: Deferred.Deferred<void> | undefined

    /** Tells `request` its result, unless it heard one already (an interrupted batch answers again). */
    const settle = (request: Request<I, O, E>, exit: Exit.Exit<O, E | GroupedCallsClosed>): void => {
      if (request.settled) return
      request.settled = true
      if (--outstanding === 0 && idle !== undefined) {
        Deferred.doneUnsafe(idle, Exit.void)
        idle = undefined
      }
      request.done(exit)
    }
    /** Queues a request for `input`; false once the calls are shut down. */
    const offer = (input: I, done: Request<I, O, E>["done"]): boolean => {
      outstanding++
      if (Queue.offerUnsafe(requests, { input, done, settled: false })) return true
      outstanding--
      return false
    }

    /** Runs the batch; on a fault of the rows themselves, each request alone. */
    const runBatch = (batch: ReadonlyArray<Request<I, O, E>>): Effect.Effect<void> =>
      Effect.gen(function*() {
        const exit = yield* Effect.exit(options.run(batch.map((request) => request.input)))
        if (Exit.isSuccess(exit)) {
          batch.forEach((request, i) => settle(request, Exit.succeed(exit.value[i]!)))
          return
        }
        if (batch.length > 1 && isRowFault(exit.cause)) {
          for (const request of batch) yield* runBatch([request])
          return
        }
        for (const request of batch) settle(request, Exit.failCause(exit.cause))
      }).pipe(
        Effect.onInterrupt(() => Effect.sync(() => batch.forEach((request) => settle(request, closed))))
      )

    yield* Queue.takeBetween(requests, 1, options.maxPerCall).pipe(
      Effect.flatMap(runBatch),
      Effect.forever,
      Effect.forkScoped
    )
    yield* Effect.addFinalizer(() =>
      Queue.clear(requests).pipe(
        Effect.map((left) => left.forEach((request) => settle(request, closed))),
        Effect.andThen(Queue.shutdown(requests)),
        Effect.ignore
      )
    )

    const offerUnsafe = (input: I, done: Request<I, O, E>["done"]): void => {
      if (!offer(input, done)) done(closed)
    }
    // Plain steps, no generator: this runs once per request.
    const call = (input: I) =>
      Effect.suspend(() => {
        const result = Deferred.makeUnsafe<O, E | GroupedCallsClosed>()
        return offer(input, (exit) => Deferred.doneUnsafe(result, exit))
          ? Deferred.await(result)
          : Effect.fail(new GroupedCallsClosed())
      })
    const awaitIdle = Effect.suspend(() => {
      if (outstanding === 0) return Effect.void
      idle ??= Deferred.makeUnsafe<void>()
      return Deferred.await(idle)
    })
    return Object.assign(call, { offerUnsafe, awaitIdle })
  })
