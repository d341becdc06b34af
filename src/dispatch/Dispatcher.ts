/**
 * The dispatcher and its workers (ACTIVE only): take stored updates out of the
 * inbox and run the chat flow on them, one chat at a time in `update_id`
 * order, different chats in parallel.
 *
 * Its parts, each with one job (dependencies run down this list):
 *
 * - `Claiming.ts`: wake-ups (LISTEN for other instances' stores, this
 *   instance's own stores in memory, a sweep every `DISPATCH_SWEEP_INTERVAL`)
 *   and claims in `update_id` order, bounded by the room in memory; and the
 *   rows this instance's own stores claimed for the term as they were stored
 *   (`Inbox.claimHereOnStore`: a chat's update with nothing of its chat
 *   before it needs no claim statement), taken the same way.
 * - `ChatRouting.ts`: chat `c` belongs to worker `hash(c) mod WORKERS`; each
 *   chat with work has a fiber that runs its updates in order.
 * - `HandlerRun.ts`: one update's handler runs, retries and dead-lettering.
 * - `Finishing.ts`: handled updates marked `done` with the states their
 *   handlers left and their chats' blocked flags cleared, group-committed
 *   (one transaction for all finishing at once).
 * - `Drain.ts`: stopping when the leadership term ends.
 * - `InFlight.ts` (what the term holds in memory) and `Bookkeeping.ts` (row
 *   writes retried through blips, and the counters) serve them all.
 *
 * The life of an update here (its row's `status`, and its state in memory):
 *
 * | row / memory               | event                                         | next                        |
 * | -------------------------- | --------------------------------------------- | --------------------------- |
 * | (stored here)              | claimed on storing (attempts 1), room, first  | `processing` / `queued`     |
 * | `pending`                  | claimed (attempts + 1), decodes, handled kind | `processing` / `queued`     |
 * | `pending`                  | claimed, kind the chat flow does not handle   | `done`                      |
 * | `pending`                  | claimed, payload does not decode              | `dead`                      |
 * | `processing` / `queued`    | its chat's turn and its worker's permit       | `processing` / `running`    |
 * | `processing` / `queued`    | claimed more than UPDATE_MAX_ATTEMPTS times   | `dead`                      |
 * | `processing` / `running`   | the handler succeeds                          | `done`                      |
 * | `processing` / `running`   | fails, dies or times out, runs left           | `processing` / `backoff`    |
 * | `processing` / `running`   | fails on its UPDATE_MAX_ATTEMPTS-th run       | `dead`                      |
 * | `processing` / `backoff`   | `handlerRetryPolicy` delay over (attempts + 1)| `processing` / `queued`     |
 * | `processing` / any         | graceful release (drain)                      | `pending`                   |
 * | `processing` / `running`   | lost after its finish was asked for: commits  | `done`                      |
 * | `processing` / any         | leadership lost, then its finishes stopped    | `pending` (NOTIFY)          |
 * | `processing` / any         | lost, and the hand-back fails or never runs   | `processing`, no one's      |
 * | `processing`, no one's     | the next leader's reconciler (stuck)          | `pending`                   |
 *
 * A `dead` update lets its chat's later updates go on. A retry's attempt is
 * counted in the row, across restarts; a row handed back on release gets its
 * claim's attempt back if no run had started.
 *
 * Leadership scope close (see `leadership/LeaderLock.ts`): a success exit is a graceful
 * release (stop claiming, let running handlers finish within
 * SHUTDOWN_TIMEOUT_MS, hand every unfinished row back to `pending`); an
 * interrupt or failure exit means leadership was lost: stop at once, let
 * the finishes already asked for commit (`Drain.finishSettleTimeout`), and
 * once the finishing fiber has stopped too, hand the rows back and NOTIFY
 * (`Drain.handBackAfterLoss`, bounded by `handBackTimeout`). If that fails,
 * or the process was killed or frozen and never got to it, the rows stay
 * `processing` until the next leader's reconciler returns them
 * (`inbox/Reconciler.ts`); meanwhile the claim rule keeps those chats' later
 * updates waiting, so order holds.
 */
import type { PgClient } from "@effect/sql-pg"
import { Effect, Exit, FiberSet, Layer, Queue } from "effect"
import { listenForever } from "../database/Listen.ts"
import { CHANNEL, Inbox } from "../inbox/Inbox.ts"
import { LeaderTerm } from "../leadership/LeaderTerm.ts"
import { AppConfig } from "../platform/AppConfig.ts"
import { Telegram } from "../telegram/Telegram.ts"
import { allowedUpdates } from "../telegram/TelegramUpdate.ts"
import { makeChatRouting } from "./ChatRouting.ts"
import { makeClaiming } from "./Claiming.ts"
import { drain, type DrainOptions, handBackAfterLoss, stopAtOnce } from "./Drain.ts"
import { makeFinishing } from "./Finishing.ts"
import { makeHandlerRun } from "./HandlerRun.ts"
import { makeInFlight } from "./InFlight.ts"
import { UpdateHandler } from "./UpdateHandler.ts"

/** Kinds of update the chat flow handles: only these are claimed on storing (the claim marks others done). */
const handledKinds: ReadonlySet<string> = new Set(allowedUpdates)

/** The dispatcher of one leadership term: built when the term starts, stopped when it ends. */
export const layer: Layer.Layer<
  never,
  never,
  AppConfig | Inbox | LeaderTerm | PgClient.PgClient | Telegram | UpdateHandler
> = Layer.effectDiscard(Effect.gen(function*() {
  const config = yield* AppConfig
  const inbox = yield* Inbox
  const term = (yield* LeaderTerm).id
  const workers = config.workers

  // A wake-up for the claim loop; a full slot drops the offer (one claim covers them all).
  const wake = yield* Queue.dropping<void>(1)
  const signal = Queue.offer(wake, undefined).pipe(Effect.asVoid)
  const inFlight = makeInFlight(() => Queue.offerUnsafe(wake, undefined))

  // Fibers of this term. Made before the stopping finalizer, so it runs first.
  const background = yield* FiberSet.make()
  const chatFibers = yield* FiberSet.make()

  const handler = yield* UpdateHandler
  // Added before the finishing fiber starts, so it runs once that has stopped: after a loss the rows go
  // back only when no finish of this term can still commit (one would find its row gone: a second answer).
  yield* Effect.addFinalizer((exit) =>
    Exit.isSuccess(exit) ? Effect.void : handBackAfterLoss({ inbox, term, inFlight })
  )
  // Started before the stopping finalizer, so it outlives the drain (running handlers finish through it).
  const telegram = yield* Telegram
  const finishing = yield* makeFinishing({ inbox, term, handler, telegram })
  const run = makeHandlerRun({
    inbox,
    term,
    handler,
    finishing,
    inFlight,
    handlerTimeout: config.updateHandlerTimeout,
    maxAttempts: config.updateMaxAttempts
  })
  const routing = yield* makeChatRouting({
    workers,
    inFlight,
    run,
    fibers: chatFibers,
    onCapDrained: () => Queue.offerUnsafe(wake, undefined)
  })
  const claiming = makeClaiming({
    inbox,
    term,
    inFlight,
    workers,
    floodNoticeRate: config.floodNoticeRate,
    route: routing.route
  })

  const stopping: DrainOptions = {
    inbox,
    term,
    inFlight,
    background,
    chatFibers,
    finishing,
    shutdownTimeout: config.shutdownTimeout
  }
  yield* Effect.addFinalizer((exit) =>
    Effect.gen(function*() {
      const graceful = Exit.isSuccess(exit)
      yield* graceful ? drain(stopping) : stopAtOnce(stopping)
      for (let n = 0; n < workers; n++) {
        yield* Effect.logInfo(
          `[WORKER_${n}] ⏹ ACTIVE_EXIT active=False reason=${graceful ? "released" : "leadership_lost"}`
        )
      }
    })
  )

  // Added after the stopping finalizer, so released before it: stores during the drain are pending
  // and NOTIFY again; a store that claimed for this term and commits later hands its rows back itself.
  yield* inbox.claimHereOnStore({
    term,
    room: claiming.room,
    wants: (routing) => handledKinds.has(routing.kind),
    // A span of its own, as a claim has: the handler runs it starts are its children.
    take: (claimed) =>
      claiming.takeClaimed(claimed).pipe(
        Effect.withSpan("Dispatcher.takeStored", undefined, { captureStackTrace: false })
      ),
    wake: () => Queue.offerUnsafe(wake, undefined)
  })
  for (let n = 0; n < workers; n++) yield* Effect.logInfo(`[WORKER_${n}] ✅ ACTIVE_ENTER active=True`)
  yield* FiberSet.run(background, claiming.claimLoop(wake))
  yield* FiberSet.run(
    background,
    listenForever({
      channel: CHANNEL,
      marker: "[DISPATCH]",
      fallback: "the sweep covers meanwhile",
      // Anything stored while nobody listened is picked up now.
      onListening: signal,
      onNotification: () => signal
    })
  )
}))
