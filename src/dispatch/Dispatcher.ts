/**
 * The dispatcher and its workers (ACTIVE only): take stored updates out of the
 * inbox and run the chat flow on them, one chat at a time in `update_id`
 * order, different chats in parallel.
 *
 * - Wake-up: LISTEN on the inbox channel (a stored update is dispatched the
 *   moment it is committed), a claim right after (re)connecting, and a sweep
 *   every `DISPATCH_SWEEP_INTERVAL` as a backstop for missed notifications.
 * - Claims: batches in `update_id` order (`FOR UPDATE SKIP LOCKED`), at most
 *   `WORKERS × IN_FLIGHT_PER_WORKER` updates in memory at once.
 * - Routing: chat `c` belongs to worker `hash(c) mod WORKERS`. A worker runs
 *   one handler at a time; each chat with work has a small fiber that runs its
 *   updates in order and takes the worker's permit only while a handler runs,
 *   so a chat waiting out a retry backoff holds back nobody but itself.
 * - Failures: a failed, defective or timed-out run is retried with
 *   `handlerRetryPolicy` until `UPDATE_MAX_ATTEMPTS` runs (counted in the
 *   row, across restarts), then the update is `dead` with its error and the
 *   chat's later updates go on. Undecodable payloads are dead at once; kinds
 *   the chat flow does not handle are `done` at once.
 *
 * Leadership scope close (see LeaderLock): a success exit is a graceful
 * release (stop claiming, let running handlers finish within
 * SHUTDOWN_TIMEOUT_MS, hand every unfinished row back to `pending`); an
 * interrupt or failure exit means leadership was lost: stop at once. The
 * rows this term still held stay `processing` until the next leader's
 * reconciler returns them (STUCK_UPDATE_THRESHOLD_MS); meanwhile the claim
 * rule keeps those chats' later updates waiting, so order holds.
 */
import { PgClient } from "@effect/sql-pg"
import {
  Cause,
  Clock,
  Deferred,
  Duration,
  Effect,
  Exit,
  FiberSet,
  Layer,
  Metric,
  Option,
  Queue,
  Schedule,
  Schema,
  Semaphore
} from "effect"
import { AppConfig } from "../platform/AppConfig.ts"
import { CHANNEL, type ClaimedUpdate, Inbox } from "../inbox/Inbox.ts"
import { LeaderTerm } from "../leadership/LeaderTerm.ts"
import * as Metrics from "../platform/Metrics.ts"
import { makeProblemLog } from "../platform/ProblemLog.ts"
import { Telegram } from "../telegram/Telegram.ts"
import { isHandledKind, Update } from "../telegram/TelegramUpdate.ts"
import { UpdateHandler } from "./UpdateHandler.ts"
import { bookkeepingPolicy, backoff, listenPolicy } from "../platform/Retry.ts"

/** Backstop claim when no notification arrived for this long. */
export const DISPATCH_SWEEP_INTERVAL = Duration.seconds(5)
/** Rows per claim query. */
export const CLAIM_BATCH_SIZE = 64
/** Claimed, unfinished updates held in memory per worker. */
export const IN_FLIGHT_PER_WORKER = 16
/** Delay before the next run of a failed update. */
export const handlerRetryPolicy = backoff("1 second", "30 seconds")

/** A stable worker index for a chat: FNV-1a over its decimal id, identical on every instance. */
export const workerFor = (key: string, workers: number): number => {
  let hash = 0x811c9dc5
  for (let i = 0; i < key.length; i++) {
    hash ^= key.charCodeAt(i)
    hash = Math.imul(hash, 0x01000193)
  }
  return (hash >>> 0) % workers
}

/** What a failed run is recorded as: a short message, never a whole error object. */
class AttemptFailed extends Schema.TaggedError<AttemptFailed>()("AttemptFailed", { message: Schema.String }) {}

const describeFailure = (cause: Cause.Cause<unknown>): string => {
  const error = Cause.squash(cause)
  if (Cause.isTimeoutError(error)) return "handler timed out"
  const message = error instanceof Error ? `${error.name}: ${error.message}` : String(error)
  return message.slice(0, 2000)
}

const decodeUpdate = Schema.decodeUnknownExit(Update)

type ItemState = "queued" | "running" | "backoff"

interface Item {
  readonly claimed: ClaimedUpdate
  readonly update: Update
  readonly chatKey: string
  readonly worker: number
  state: ItemState
  /** Whether a handler run started for it in this term (its claim's attempt was used). */
  started: boolean
  /** Clock time of the claim, for `zimage_update_processing_seconds`. */
  readonly claimedAtMillis: number
}

const processedAs = {
  done: Metric.withAttributes(Metrics.updatesProcessed, { outcome: "done" }),
  dead: Metric.withAttributes(Metrics.updatesProcessed, { outcome: "dead" })
}

/**
 * Rows a bookkeeping write changed: its count, 1 for `true`, 0 when the write
 * failed or the row was no longer this term's.
 */
const rowsChanged = (recorded: Option.Option<number | boolean>): number =>
  Option.match(recorded, { onNone: () => 0, onSome: (value) => (typeof value === "number" ? value : value ? 1 : 0) })

/** Counts rows recorded as finished (only once the write succeeded). */
const countFinished = (outcome: "done" | "dead", recorded: Option.Option<number | boolean>) =>
  rowsChanged(recorded) > 0 ? Metric.update(processedAs[outcome], rowsChanged(recorded)) : Effect.void

/** Counts one finished update and observes its time from claim to finish. */
const countItem = (item: Item, outcome: "done" | "dead", recorded: Option.Option<number | boolean>) =>
  Effect.gen(function*() {
    if (rowsChanged(recorded) === 0) return
    yield* Metric.update(processedAs[outcome], 1)
    const now = yield* Clock.currentTimeMillis
    yield* Metric.update(Metrics.updateProcessingSeconds, Math.max(0, now - item.claimedAtMillis) / 1000)
  })

export const layer: Layer.Layer<
  never,
  never,
  AppConfig | Inbox | LeaderTerm | PgClient.PgClient | Telegram | UpdateHandler
> = Layer.effectDiscard(Effect.gen(function*() {
  const config = yield* AppConfig
  const inbox = yield* Inbox
  const term = (yield* LeaderTerm).id
  const pg = yield* PgClient.PgClient
  const telegram = yield* Telegram
  const handler = yield* UpdateHandler

  const workers = config.workers
  const capacity = workers * IN_FLIGHT_PER_WORKER
  const permits = yield* Effect.forEach(Array.from({ length: workers }), () => Semaphore.make(1))
  const wake = yield* Queue.dropping<void>(1)
  const signal = Queue.offer(wake, undefined).pipe(Effect.asVoid)

  const items = new Map<number, Item>()
  const chats = new Map<string, Array<Item>>()
  let draining = false
  let saturated = false
  let runningCount = 0
  let idle: Deferred.Deferred<void> | undefined

  // Fibers of this term. Made before the drain finalizer, so it runs first.
  const background = yield* FiberSet.make()
  const chatFibers = yield* FiberSet.make()

  const setState = (item: Item, state: ItemState) => {
    if (item.state === "running") runningCount--
    if (state === "running") runningCount++
    item.state = state
    if (runningCount === 0 && idle !== undefined) Deferred.doneUnsafe(idle, Exit.void)
  }

  const finish = (item: Item) => {
    if (item.state === "running") runningCount--
    items.delete(item.claimed.updateId)
    if (runningCount === 0 && idle !== undefined) Deferred.doneUnsafe(idle, Exit.void)
    if (saturated) {
      saturated = false
      Queue.offerUnsafe(wake, undefined)
    }
  }

  const bookkeeping = <A, E>(what: string, effect: Effect.Effect<A, E>) =>
    effect.pipe(
      Effect.retry(bookkeepingPolicy),
      Effect.tapCause((cause) =>
        Cause.hasInterruptsOnly(cause)
          ? Effect.void
          : Effect.logError(`[DISPATCH] could not record ${what}; the row stays with this term`)
      ),
      Effect.option
    )

  /** One handler run, holding the worker's permit; any failure but interruption becomes AttemptFailed. */
  const runOnce = (item: Item, attempt: number) =>
    Semaphore.withPermit(
      permits[item.worker]!,
      Effect.gen(function*() {
        // Draining: never start a run; the row is handed back instead.
        if (draining) return yield* Effect.interrupt
        setState(item, "running")
        item.started = true
        yield* handler.handle(item.update, { updateId: item.claimed.updateId, attempt }).pipe(
          Effect.timeout(config.updateHandlerTimeout),
          Effect.catchCause((cause) =>
            Cause.hasInterruptsOnly(cause)
              ? Effect.failCause(cause as Cause.Cause<never>)
              : Effect.fail(new AttemptFailed({ message: describeFailure(cause) }))
          )
        )
      })
    )

  /** Runs one update to its end: done, dead, or (draining) left for the release. */
  const processItem = Effect.fn("Dispatcher.processItem")(function*(item: Item) {
    const { updateId } = item.claimed
    let attempt = item.claimed.attempts
    if (attempt > config.updateMaxAttempts) {
      // Claimed again after claims that never finished (a crash or a lost leadership each time).
      const message = `gave up after ${attempt - 1} claims that did not finish (crash or lost leadership)`
      const recorded = yield* bookkeeping(`update ${updateId} as dead`, inbox.markDead(term, updateId, message))
      yield* countItem(item, "dead", recorded)
      return yield* Effect.logError(`[DISPATCH] update ${updateId} dead: ${message}`)
    }
    const nextDelay = yield* Schedule.toStep(handlerRetryPolicy)
    for (;;) {
      const outcome = yield* Effect.result(runOnce(item, attempt))
      if (outcome._tag === "Success") {
        const recorded = yield* bookkeeping(`update ${updateId} as done`, inbox.complete(term, [updateId]))
        yield* countItem(item, "done", recorded)
        return
      }
      // Still "running" until the failure is recorded: a drain waits for that write.
      const failure = outcome.failure
      yield* Effect.logWarning(
        `[DISPATCH] update ${updateId} failed (run ${attempt} of ${config.updateMaxAttempts}): ${failure.message}`
      )
      if (attempt >= config.updateMaxAttempts) {
        yield* countItem(
          item,
          "dead",
          yield* bookkeeping(`update ${updateId} as dead`, inbox.markDead(term, updateId, failure.message))
        )
        return yield* Effect.logError(`[DISPATCH] update ${updateId} dead after ${attempt} runs: ${failure.message}`)
      }
      yield* bookkeeping(`the failure of update ${updateId}`, inbox.recordFailure(term, updateId, failure.message))
      yield* Metric.update(Metrics.updateRetries, 1)
      setState(item, "backoff")
      const delay = yield* nextDelay(yield* Clock.currentTimeMillis, undefined).pipe(
        Effect.map(([, delay]) => delay),
        Effect.orElseSucceed(() => Duration.seconds(30))
      )
      yield* Effect.logInfo(`[DISPATCH] update ${updateId}: run ${attempt + 1} in ${Duration.format(delay)}`)
      yield* Effect.sleep(delay)
      if (draining) return yield* Effect.interrupt
      yield* bookkeeping(`a new run of update ${updateId}`, inbox.beginAttempt(term, updateId))
      attempt++
    }
  })

  /** The fiber of one chat: its queued updates, strictly one after another. */
  const runChat = (key: string): Effect.Effect<void> =>
    Effect.gen(function*() {
      for (;;) {
        const queue = chats.get(key)
        const item = queue?.[0]
        if (queue === undefined || item === undefined) {
          chats.delete(key)
          return
        }
        yield* processItem(item).pipe(
          // A bug of ours (not the handler's: its failures are handled above)
          // must not wedge the chat: the update is dead, the chat goes on.
          Effect.catchCause((cause) =>
            Cause.hasInterruptsOnly(cause) ? Effect.failCause(cause) : Effect.gen(function*() {
              yield* Effect.logError(`[DISPATCH] internal error on update ${item.claimed.updateId}`, cause)
              yield* countItem(
                item,
                "dead",
                yield* bookkeeping(
                  `update ${item.claimed.updateId} as dead`,
                  inbox.markDead(term, item.claimed.updateId, `internal error: ${describeFailure(cause)}`)
                )
              )
            })
          )
        )
        queue.shift()
        finish(item)
      }
    })

  const route = (item: Item) =>
    Effect.gen(function*() {
      items.set(item.claimed.updateId, item)
      const queue = chats.get(item.chatKey)
      if (queue !== undefined) {
        queue.push(item)
        return
      }
      chats.set(item.chatKey, [item])
      yield* FiberSet.run(chatFibers, runChat(item.chatKey))
    })

  /** Claims while there is room and rows keep coming; returns how many were claimed. */
  const claimAvailable = Effect.gen(function*() {
    let total = 0
    for (;;) {
      const room = Math.min(CLAIM_BATCH_SIZE, capacity - items.size)
      if (room <= 0) {
        saturated = true
        return total
      }
      const claimed = yield* inbox.claim(term, room)
      const claimedAtMillis = yield* Clock.currentTimeMillis
      total += claimed.length
      const finished: Array<number> = []
      const routed: Array<Item> = []
      for (const row of claimed) {
        const decoded = decodeUpdate(row.payload)
        if (Exit.isFailure(decoded)) {
          const message = `undecodable update: ${describeFailure(decoded.cause).slice(0, 500)}`
          yield* countFinished(
            "dead",
            yield* bookkeeping(`update ${row.updateId} as dead`, inbox.markDead(term, row.updateId, message))
          )
          yield* Effect.logError(`[DISPATCH] update ${row.updateId} dead: ${message}`)
          continue
        }
        if (!isHandledKind(decoded.value)) {
          finished.push(row.updateId)
          continue
        }
        const chatKey = row.chatId === null ? `update:${row.updateId}` : String(row.chatId)
        routed.push({
          claimed: row,
          update: decoded.value,
          chatKey,
          worker: workerFor(chatKey, workers),
          state: "queued",
          started: false,
          claimedAtMillis
        })
      }
      if (finished.length > 0) {
        yield* countFinished(
          "done",
          yield* bookkeeping(`${finished.length} update(s) of unhandled kinds as done`, inbox.complete(term, finished))
        )
        yield* Effect.logDebug(`[DISPATCH] ${finished.length} update(s) of kinds the bot does not handle marked done`)
      }
      // An update from a chat proves the bot can write to it again, before its handler tries.
      yield* telegram.markUnblocked(routed.flatMap((item) => (item.claimed.chatId === null ? [] : [item.claimed.chatId])))
      for (const item of routed) yield* route(item)
      if (claimed.length < room) return total
    }
  })

  /**
   * Waits for a wake-up, then claims. The first wake-up comes from the
   * listener once LISTEN is confirmed (so nothing stored in between is
   * missed), or from the sweep timer if LISTEN cannot be established.
   */
  const claimLoop = Effect.gen(function*() {
    const problems = makeProblemLog()
    for (;;) {
      yield* Effect.logDebug("[DISPATCH] waiting for work")
      const woken = yield* Queue.take(wake).pipe(Effect.timeoutOption(DISPATCH_SWEEP_INTERVAL))
      const result = yield* Effect.result(claimAvailable)
      if (result._tag === "Failure") {
        yield* problems.failing(`[DISPATCH] claim failed, retrying on the next wake-up: ${result.failure.message}`)
        continue
      }
      yield* problems.recovered("[DISPATCH] claiming works again")
      if (Option.isNone(woken) && result.success > 0) {
        // Only a missed notification (e.g. across a reconnect) leaves work for the sweep.
        yield* Effect.logInfo(`[DISPATCH] sweep found ${result.success} update(s) no notification announced`)
      }
    }
  })

  const listenProblems = makeProblemLog()
  const listenLoop = Effect.gen(function*() {
    const notifications = yield* pg.listen(CHANNEL)
    // Anything stored while we were not listening is picked up now.
    yield* signal
    const again = yield* listenProblems.recovered(`[DISPATCH] listening on ${CHANNEL} again`)
    if (!again) yield* Effect.logDebug(`[DISPATCH] listening on ${CHANNEL}`)
    yield* Queue.take(notifications).pipe(Effect.andThen(signal), Effect.forever)
  }).pipe(
    Effect.scoped,
    Effect.tapError((error) =>
      listenProblems.failing(
        `[DISPATCH] LISTEN ${CHANNEL} failed, reconnecting (the sweep covers meanwhile): ${error.message}`
      )
    ),
    Effect.retry(listenPolicy)
  )

  /** Graceful release: no new runs, running ones finish (bounded), the rest goes back to `pending`. */
  const drain = Effect.gen(function*() {
    draining = true
    yield* FiberSet.clear(background)
    if (runningCount > 0) {
      const done = yield* Deferred.make<void>()
      idle = done
      if (runningCount === 0) yield* Deferred.succeed(done, undefined)
      yield* Effect.logInfo(`[DISPATCH] draining: waiting for ${runningCount} running handler(s)`)
      const finished = yield* Deferred.await(done).pipe(Effect.timeoutOption(config.shutdownTimeout))
      if (Option.isNone(finished)) {
        yield* Effect.logWarning(
          `[DISPATCH] ${runningCount} handler(s) still running after ${Duration.format(config.shutdownTimeout)}; interrupting`
        )
      }
    }
    yield* FiberSet.clear(chatFibers)
    // Everything this term still holds goes back, including rows a claim
    // returned while it was being stopped (they are in no list in memory).
    const started = [...items.values()].filter((item) => item.started).map((item) => item.claimed.updateId)
    const released = yield* inbox.release(term, started).pipe(Effect.timeout("5 seconds"), Effect.option)
    yield* Option.match(released, {
      onNone: () =>
        Effect.logWarning("[DISPATCH] could not hand unfinished updates back; the next leader's reconciler will"),
      onSome: (count) =>
        count === 0 ? Effect.void : Effect.logInfo(`[DISPATCH] handed ${count} unfinished update(s) back to pending`)
    })
  })

  yield* Effect.addFinalizer((exit) =>
    Effect.gen(function*() {
      const graceful = Exit.isSuccess(exit)
      if (graceful) yield* drain
      else {
        draining = true
        yield* FiberSet.clear(background)
        yield* FiberSet.clear(chatFibers)
      }
      for (let n = 0; n < workers; n++) {
        yield* Effect.logInfo(
          `[WORKER_${n}] ⏹ ACTIVE_EXIT active=False reason=${graceful ? "released" : "leadership_lost"}`
        )
      }
    })
  )

  for (let n = 0; n < workers; n++) yield* Effect.logInfo(`[WORKER_${n}] ✅ ACTIVE_ENTER active=True`)
  yield* FiberSet.run(background, claimLoop)
  yield* FiberSet.run(background, listenLoop)
}))
