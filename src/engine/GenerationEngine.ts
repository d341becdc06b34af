/**
 * The generation engine (ACTIVE instance only): drives every row of the
 * `generations` table from `queued` to `delivered` or `failed`. The rows are
 * the truth; this engine keeps nothing that a successor could not rebuild
 * from them, so a new leader resumes every unfinished generation.
 *
 *   queued ─(rate budget)─▶ submitting ─createTask─▶ submitted ─poll/callback─▶ succeeded ─send─▶ delivered
 *   (any unfinished status) ─Kie refused / task failed / deadline / undeliverable─▶ failed ─notice─▶ (user told)
 *
 * | status       | who moves it on                 | to                                   |
 * | ------------ | ------------------------------- | ------------------------------------ |
 * | `queued`     | `Submission`                    | `submitting`, `failed`               |
 * | `submitting` | `Submission`, `Sweep` (recover) | `submitted`, `queued`, `failed`      |
 * | `submitted`  | `ResultWatch`                   | `succeeded`, `failed`                |
 * | `succeeded`  | `Delivery`                      | `delivered`, `failed`                |
 * | `failed`     | `FailureNotices`                | (its user told once: `notified_at`)  |
 * | any          | `Sweep` (deadline)              | `failed`                             |
 *
 * The engine is a handful of fibers per term, never one sleeping fiber per
 * generation, built from parts with one job each; each takes the term's
 * shared state (`EngineTerm`) and the parts it hands work to, so the
 * dependencies run one way:
 *
 *   FailureNotices ──▶ StatusMessages
 *   ResultUpload   ──▶ FailureNotices
 *   Delivery       ──▶ ResultUpload, FailureNotices, StatusMessages
 *   ResultWatch    ──▶ Delivery, FailureNotices
 *   Sweep          ──▶ Delivery, FailureNotices, StatusMessages, AccountPause
 *   Submission     ──▶ Sweep (`expire` only), FailureNotices, AccountPause
 *
 * (each part uses only those listed after it, and every part uses `EngineTerm`
 * and `Bookkeeping`; nothing points back).
 *
 * - `Submission` (+ `AccountPause`): createTask within the budget, fair
 *   order; pauses after Kie refuses.
 * - `ResultWatch`: polling recordInfo, and Kie's callbacks.
 * - `Delivery` (+ `ResultUpload`): the picture to the user, once as far as
 *   possible.
 * - `FailureNotices`: failing a generation and telling its user once.
 * - `StatusMessages`: the "⏳" message while it waits; removed after delivery.
 * - `Sweep`: deadlines, recovery of `submitting` rows, and whatever a
 *   wake-up missed.
 * - new rows are heard by LISTEN on `generations` (`listenForever`), which
 *   wakes the submission and the sweep.
 *
 * All time comes from `Clock` (UTC), so tests drive it with TestClock.
 *
 * Leadership scope close: a success exit (graceful release) stops taking
 * work, lets in-flight createTask requests and deliveries finish within
 * SHUTDOWN_TIMEOUT_MS, then stops; submissions still waiting for the budget
 * stop at once (their rows stay `queued`). A failure or interrupt exit
 * (leadership lost) stops everything at once. Either way every row is left
 * resumable.
 */
import type { PgClient } from "@effect/sql-pg"
import { DateTime, Duration, Effect, Exit, FiberSet, Layer, Option, Ref } from "effect"
import { CHANNEL, Generations } from "../generations/Generations.ts"
import { GenerationEngineStatus } from "../generations/GenerationsHealth.ts"
import type { Kie } from "../kie/Kie.ts"
import type { KieCallbacks } from "../kie/KieCallback.ts"
import * as KieRateBudget from "../kie/KieRateBudget.ts"
import { ResultDownload } from "../media/ResultDownload.ts"
import { listenForever } from "../database/Listen.ts"
import { AppConfig } from "../platform/AppConfig.ts"
import type { Telegram } from "../telegram/Telegram.ts"
import * as AccountPause from "./AccountPause.ts"
import * as Delivery from "./Delivery.ts"
import * as EngineTerm from "./EngineTerm.ts"
import * as FailureNotices from "./FailureNotices.ts"
import * as ResultWatch from "./ResultWatch.ts"
import * as StatusMessages from "./StatusMessages.ts"
import * as Submission from "./Submission.ts"
import * as Sweep from "./Sweep.ts"

/** The services the engine runs on. */
export type Requirements =
  | AppConfig
  | Generations
  | GenerationEngineStatus
  | Kie
  | KieCallbacks
  | KieRateBudget.KieRateBudget
  | PgClient.PgClient
  | ResultDownload
  | Telegram

/** The parts of one term, wired together (see the module doc). */
export const makeParts = Effect.gen(function*() {
  const term = yield* EngineTerm.make
  const status = yield* StatusMessages.make
  const notices = yield* FailureNotices.make(term, status)
  const pause = yield* AccountPause.make
  const delivery = yield* Delivery.make(term, { notices, status })
  const results = yield* ResultWatch.make(term, { notices, delivery })
  const sweep = yield* Sweep.make(term, { pause, notices, delivery, status })
  const submission = yield* Submission.make(term, { pause, notices, sweep })
  return { term, status, notices, pause, delivery, results, sweep, submission }
})

/** New rows: LISTEN on `generations` wakes the submission (and the sweep, for what a wake-up missed). */
const listenLoop = (term: EngineTerm.EngineTerm) =>
  listenForever({
    channel: CHANNEL,
    marker: "[GEN]",
    fallback: "the sweep covers meanwhile",
    // Anything recorded while we were not listening is picked up now.
    onListening: term.wake("submit"),
    onNotification: () => term.wake("submit").pipe(Effect.andThen(term.wake("sweep")))
  })

/** Kie's window still counts what the previous leader sent: take those slots first; how many were taken. */
const holdEarlierSlots = Effect.gen(function*() {
  const config = yield* AppConfig
  const generations = yield* Generations
  const budget = yield* KieRateBudget.KieRateBudget
  // Looking back a little further than a slot is ever held (window + margin + EARLIER_SEND_SLACK) is enough.
  const startedAt = yield* DateTime.now
  return yield* generations.sentSince(
    DateTime.subtractDuration(startedAt, Duration.sum(config.kieCreateRate.window, Duration.seconds(5)))
  ).pipe(
    Effect.flatMap((sends) => budget.recordEarlierSends(sends.map(DateTime.toEpochMillis))),
    Effect.catch((error) =>
      Effect.as(
        Effect.logWarning(
          `[GEN] could not read recent createTask requests (the budget starts empty): ${error.message}`
        ),
        0
      )
    )
  )
})

/** The engine for one leadership term: built when the term starts, stopped when its scope closes. */
export const layer: Layer.Layer<never, never, Requirements> = Layer.effectDiscard(Effect.gen(function*() {
  const config = yield* AppConfig
  const generations = yield* Generations
  const engineStatus = yield* GenerationEngineStatus
  const { term, status, results, sweep, submission } = yield* makeParts

  // Added after the term's fiber sets, so it runs before they are closed.
  yield* Effect.addFinalizer((exit) =>
    Effect.gen(function*() {
      const graceful = Exit.isSuccess(exit)
      yield* term.stop(graceful, config.shutdownTimeout)
      yield* Ref.set(engineStatus.running, false)
      yield* Effect.logInfo(`[GEN] engine stopped (${graceful ? "released" : "leadership lost"})`)
    })
  )

  const counts = yield* generations.counts.pipe(Effect.option)
  const earlierSlots = yield* holdEarlierSlots
  yield* Ref.set(engineStatus.running, true)
  yield* Effect.logInfo(
    `[GEN] engine started${
      Option.match(counts, {
        onNone: () => "",
        onSome: (c) =>
          `: resuming ${c.queued} queued, ${c.submitting} submitting, ${c.submitted} submitted, ${c.succeeded} succeeded`
      })
    }; ${earlierSlots} createTask budget slot(s) held for requests sent in the last window`
  )
  yield* FiberSet.run(term.background, listenLoop(term))
  yield* FiberSet.run(term.background, results.callbackLoop)
  yield* FiberSet.run(term.background, sweep.loop)
  yield* FiberSet.run(term.background, submission.loop)
  yield* FiberSet.run(term.background, results.pollLoop)
  yield* FiberSet.run(term.background, status.loop)
}))

/** The engine with its own download client. */
export const layerWithDownloads: Layer.Layer<never, never, Exclude<Requirements, ResultDownload>> = layer.pipe(
  Layer.provide(ResultDownload.layer)
)
