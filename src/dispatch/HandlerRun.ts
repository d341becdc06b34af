/**
 * One update's handler runs, from its claim to `done` or `dead`: each run
 * holds the worker, a failed run is retried after a backoff, and the last
 * failure (or a bug of ours) dead-letters the update so its chat goes on.
 *
 * Details: a failed, defective or timed-out run (`UPDATE_HANDLER_TIMEOUT_MS`)
 * is retried with `handlerRetryPolicy` until `UPDATE_MAX_ATTEMPTS` runs,
 * counted in the row across restarts; then the update is `dead` with its
 * error. An update claimed again after more claims than that which never
 * finished (a crash or a lost leadership each time) is dead at once.
 *
 * A run that must wait for Telegram (a flood limit) longer than
 * `HANDLER_INLINE_WAIT` ends with `waitMillis`: the update is rescheduled,
 * run again after that wait with no attempt counted, up to `MAX_RESCHEDULES`
 * times in a row. Shorter waits are taken in line, and a run lets go of its
 * worker while it waits, so a chat waiting on Telegram holds back nobody
 * else.
 *
 * A successful run is finished (`Finishing.ts`, group-committed with what its
 * handler left to write). A finish the database refuses for its data
 * (SQLSTATE class 22 or 23: no retry can store it) makes the update dead, so
 * its chat goes on from the state before it.
 *
 * Gotchas: while draining no run starts, and a backoff that ends is not
 * followed by a run: the fiber is interrupted and the row is handed back by
 * the drain. An update stays `running` until its failure is recorded, so the
 * drain waits for that write too.
 */
import { Cause, Clock, DateTime, Duration, Effect, Metric, Option, Schedule, Schema, Semaphore } from "effect"
import type { InboxShape } from "../inbox/Inbox.ts"
import * as Metrics from "../observability/Metrics.ts"
import { isRowFault } from "../platform/GroupedCalls.ts"
import { backoff } from "../platform/Retry.ts"
import { SendWaits } from "../telegram/SendGate.ts"
import type { InFlight, Item } from "./InFlight.ts"
import { countProcessed, describeFailure, record } from "./Bookkeeping.ts"
import type { Finishing } from "./Finishing.ts"
import { ConversingChat } from "../telegram/Telegram.ts"
import type { UpdateHandler } from "./UpdateHandler.ts"

/** Delay before the next run of a failed update. */
export const handlerRetryPolicy = backoff("1 second", "30 seconds")

/** The step function of `handlerRetryPolicy`: the delay before each next run. */
type RetryStep = Effect.Success<ReturnType<typeof Schedule.toStep<unknown, unknown, never, never>>>

/** A handler run waits for Telegram up to this long in line; a longer wait reschedules the update. */
export const HANDLER_INLINE_WAIT = Duration.seconds(5)
/** Reschedules in a row after which a run that must wait counts as failed after all. */
export const MAX_RESCHEDULES = 20

/**
 * What a failed run is recorded as: a short message, never a whole error
 * object; `waitMillis` when it only has to wait for Telegram.
 */
class AttemptFailed extends Schema.TaggedError<AttemptFailed>()("AttemptFailed", {
  message: Schema.String,
  waitMillis: Schema.optionalKey(Schema.Number)
}) {}

/** The failure of a run, keeping the handler's `waitMillis` (a flood wait) if it has one. */
const attemptFailed = (cause: Cause.Cause<unknown>): AttemptFailed => {
  const error = Cause.findErrorOption(cause)
  const waitMillis = Option.isSome(error) && typeof error.value === "object" && error.value !== null &&
      "waitMillis" in error.value && typeof error.value.waitMillis === "number"
    ? error.value.waitMillis
    : undefined
  const message = describeFailure(cause)
  return waitMillis === undefined ? new AttemptFailed({ message }) : new AttemptFailed({ message, waitMillis })
}

/**
 * How a handler run waits for Telegram: replies (not the bot's own sends),
 * at most `HANDLER_INLINE_WAIT` in line, and the worker let go meanwhile
 * (taken back before the run goes on; concurrent waits let go of it once).
 */
const sendWaitsFor = (worker: Semaphore.Semaphore): SendWaits => {
  let waiting = 0
  return {
    own: false,
    maxWaitMillis: Duration.toMillis(HANDLER_INLINE_WAIT),
    around: (wait) =>
      Effect.acquireUseRelease(
        Effect.suspend(() => ++waiting === 1 ? Semaphore.release(worker, 1) : Effect.succeed(0)),
        () => wait,
        () => Effect.suspend(() => --waiting === 0 ? Semaphore.take(worker, 1) : Effect.succeed(0))
      )
  }
}

/** When the update was stored (its claim, if the stored time could not be read). */
const arrivedAtMillis = (item: Item): number =>
  Option.match(item.claimed.receivedAt, {
    onNone: () => item.claimedAtMillis,
    onSome: (at) => DateTime.toEpochMillis(at)
  })

/**
 * How a successful run's finish ended: written (`owned`: this term still had
 * the row), or refused by the database for its data (SQLSTATE class 22/23),
 * which no retry changes.
 */
type Finished = { readonly _tag: "Finished"; readonly owned: boolean } | {
  readonly _tag: "Unwritable"
  readonly message: string
}

/** What a handler run needs. */
export interface HandlerRunOptions {
  readonly inbox: InboxShape
  /** This leadership term: every row write is guarded by it. */
  readonly term: string
  readonly handler: UpdateHandler["Service"]
  /** Marks a handled update done, with what its handler left to write (group-committed). */
  readonly finishing: Finishing
  readonly inFlight: InFlight
  readonly handlerTimeout: Duration.Duration
  readonly maxAttempts: number
}

/**
 * Makes the runner: `run(item, worker)` runs an update to its end (done, dead,
 * or, draining, left for the release), each handler run holding `worker`.
 * Never fails; interruption passes through.
 */
export const makeHandlerRun = (options: HandlerRunOptions) => {
  const { finishing, handler, inFlight, inbox, maxAttempts, term } = options

  const markDead = (item: Item, message: string) =>
    record(`update ${item.claimed.updateId} as dead`, inbox.markDead(term, item.claimed.updateId, message)).pipe(
      Effect.flatMap((recorded) => countProcessed("dead", recorded, item.claimedAtMillis))
    )

  /**
   * One handler run, holding the worker's permit except while it waits for
   * Telegram; any failure but interruption becomes AttemptFailed.
   */
  const runOnce = (item: Item, worker: Semaphore.Semaphore, attempt: number) =>
    Semaphore.withPermit(
      worker,
      Effect.gen(function*() {
        // Draining: never start a run; the row is handed back instead.
        if (inFlight.isDraining()) return yield* Effect.interrupt
        inFlight.setState(item, "running")
        item.started = true
        const context = { updateId: item.claimed.updateId, attempt, ...(item.flood ? { flood: item.flood } : {}) }
        return yield* handler.handle(item.update, context).pipe(
          Effect.timeout(options.handlerTimeout),
          Effect.provideService(SendWaits, sendWaitsFor(worker)),
          // Replies go to a chat that just wrote to us: no blocked-chat lookup before them.
          Effect.provideService(ConversingChat, item.claimed.chatId ?? undefined),
          Effect.catchCause((cause) =>
            Cause.hasInterruptsOnly(cause)
              ? Effect.failCause(cause as Cause.Cause<never>)
              : Effect.fail(attemptFailed(cause))
          )
        )
      })
    )

  /** Waits out Telegram's flood wait for a rescheduled update, holding no worker. */
  const waitForTelegram = (item: Item, waitMillis: number) =>
    Effect.gen(function*() {
      inFlight.setState(item, "backoff")
      yield* Metric.update(Metrics.updateReschedules, 1)
      yield* Effect.logInfo(
        `[DISPATCH] update ${item.claimed.updateId} waits ${
          Math.ceil(waitMillis / 1000)
        } s for Telegram's flood limit; it runs again then (not a failure)`
      )
      yield* Effect.sleep(Duration.millis(waitMillis))
    })

  /** Runs until done or dead, with retries. */
  const runToEnd = (item: Item, worker: Semaphore.Semaphore) =>
    runToEndUntraced(item, worker).pipe(
      // A span without `Effect.fn`'s stack trace captures: they are measurable CPU on every update.
      Effect.withSpan(
        "Dispatcher.handlerRun",
        { attributes: { update_id: item.claimed.updateId, chat: item.chatKey } },
        { captureStackTrace: false }
      )
    )

  const runToEndUntraced = Effect.fnUntraced(function*(item: Item, worker: Semaphore.Semaphore) {
    const { updateId } = item.claimed
    let attempt = item.claimed.attempts
    if (attempt > maxAttempts) {
      // Claimed again after claims that never finished (a crash or a lost leadership each time).
      const message = `gave up after ${attempt - 1} claims that did not finish (crash or lost leadership)`
      yield* markDead(item, message)
      return yield* Effect.logError(`[DISPATCH] update ${updateId} dead: ${message}`)
    }
    // Made on the first failure: most updates never need it.
    let nextDelay: RetryStep | undefined
    let reschedules = 0
    for (;;) {
      const outcome = yield* Effect.result(runOnce(item, worker, attempt))
      if (outcome._tag === "Success") {
        const finish = finishing.finish(
          { updateId, chatId: item.claimed.chatId, arrivedAtMillis: arrivedAtMillis(item) },
          outcome.success ?? undefined
        ).pipe(
          Effect.map((owned): Finished => ({ _tag: "Finished", owned })),
          // Retrying cannot help what the database refuses to store: the update is dead instead.
          Effect.catchIf(
            (error) => isRowFault(Cause.fail(error)),
            (error) => Effect.succeed<Finished>({ _tag: "Unwritable", message: describeFailure(Cause.fail(error)) })
          )
        )
        const recorded = yield* record(`update ${updateId} as done`, finish)
        if (Option.isSome(recorded) && recorded.value._tag === "Unwritable") {
          const message = `its handler's state could not be saved: ${recorded.value.message}`
          yield* markDead(item, message)
          return yield* Effect.logError(`[DISPATCH] update ${updateId} dead: ${message}`)
        }
        const owned = Option.map(recorded, (finished) => finished._tag === "Finished" && finished.owned)
        yield* countProcessed("done", owned, item.claimedAtMillis)
        return
      }
      // Still "running" until the failure is recorded: a drain waits for that write.
      const failure = outcome.failure
      if (failure.waitMillis !== undefined && reschedules < MAX_RESCHEDULES) {
        reschedules++
        yield* waitForTelegram(item, failure.waitMillis)
        if (inFlight.isDraining()) return yield* Effect.interrupt
        continue
      }
      reschedules = 0
      yield* Effect.logWarning(
        `[DISPATCH] update ${updateId} failed (run ${attempt} of ${maxAttempts}): ${failure.message}`
      )
      if (attempt >= maxAttempts) {
        yield* markDead(item, failure.message)
        return yield* Effect.logError(`[DISPATCH] update ${updateId} dead after ${attempt} runs: ${failure.message}`)
      }
      yield* record(`the failure of update ${updateId}`, inbox.recordFailure(term, updateId, failure.message))
      yield* Metric.update(Metrics.updateRetries, 1)
      inFlight.setState(item, "backoff")
      nextDelay ??= yield* Schedule.toStep(handlerRetryPolicy)
      const delay = yield* nextDelay(yield* Clock.currentTimeMillis, undefined).pipe(
        Effect.map(([, delay]) => delay),
        Effect.orElseSucceed(() => Duration.seconds(30))
      )
      yield* Effect.logInfo(`[DISPATCH] update ${updateId}: run ${attempt + 1} in ${Duration.format(delay)}`)
      yield* Effect.sleep(delay)
      if (inFlight.isDraining()) return yield* Effect.interrupt
      yield* record(`a new run of update ${updateId}`, inbox.beginAttempt(term, updateId))
      attempt++
    }
  })

  return (item: Item, worker: Semaphore.Semaphore): Effect.Effect<void> =>
    runToEnd(item, worker).pipe(
      // A bug of ours (not the handler's: its failures are handled above)
      // must not wedge the chat: the update is dead, the chat goes on.
      Effect.catchCause((cause) =>
        Cause.hasInterruptsOnly(cause) ? Effect.failCause(cause) : Effect.gen(function*() {
          yield* Effect.logError(`[DISPATCH] internal error on update ${item.claimed.updateId}`, cause)
          yield* markDead(item, `internal error: ${describeFailure(cause)}`)
        })
      )
    )
}
