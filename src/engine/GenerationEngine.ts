/**
 * The generation engine (ACTIVE instance only): drives every row of the
 * `generations` table from `queued` to `delivered` or `failed`. The rows are
 * the truth; this engine keeps nothing that a successor could not rebuild
 * from them, so a new leader resumes every unfinished generation.
 *
 *   queued ─(rate budget)─▶ submitting ─createTask─▶ submitted ─poll/callback─▶ succeeded ─send─▶ delivered
 *
 * A handful of fibers per term, never one sleeping fiber per generation:
 *
 * - submitter: waits until the createTask budget has a free slot, then takes
 *   the next row in fair order (`Generations.nextQueued`: oldest first, one
 *   per user per round) and starts its createTask. The row is marked
 *   `submitting` (with the `ref` of its callBackUrl) *inside* the budget
 *   permit, right before the request leaves (`Kie.createTask`'s
 *   `beforeSend`): a crash while waiting for the budget leaves it `queued`
 *   (safe to send), a crash after leaves it `submitting` (unknown). The task
 *   id is stored with `submitted` in one statement. Woken by NOTIFY
 *   `generations` (new rows), with a sweep as a backstop.
 * - poller: one loop over due `submitted` rows (`next_poll_at`), a stored
 *   trusted callback first, else one recordInfo per row through its own
 *   limiter (RECORD_INFO_RATE), at most MAX_CONCURRENT_POLLS in flight.
 * - callbacks: `KieCallbacks.subscribe`; a trusted callback settles its
 *   generation at once, a hint makes it due for polling now; a resync
 *   re-checks the stored callbacks of every `submitted` row.
 * - sweep (every SWEEP_INTERVAL, and when woken): deadlines, deliveries of
 *   `succeeded` rows, failure notices, rows left `submitting`, status messages
 *   of finished rows.
 * - status: edits each waiting user's status message with their queue
 *   position, then the elapsed time; at most every STATUS_EDIT_INTERVAL per
 *   message and STATUS_CHAT_SPACING per chat, only when the text changes, in
 *   its own fiber so it never delays a submission or a delivery.
 * - deliveries and failure notices run as short jobs, keyed by generation.
 *
 * Never a second createTask for a generation: only `queued` rows are
 * submitted. A row found `submitting` that this term is not sending is
 * resolved through the task registry (`Kie.recoverTask(ref)`: the task id
 * createTask returned, or the one Kie's callback revealed for the ref). If
 * that reveals nothing: in webhook mode it waits for the callback until its
 * deadline; in polling mode (no callback can come) it fails at once with the
 * retry button, once the previous attempt has certainly ended
 * (KIE_REQUEST_TIMEOUT_MS + UNCERTAIN_SETTLE after it was marked). Errors that
 * prove nothing was created (429, 455, 5xx, no connection, after the
 * client's own retries) put the row back to `queued` and pause all
 * submissions with a growing backoff: the user keeps their place and gets
 * the picture once Kie recovers, within the deadline. Account problems (401
 * key, 402 credits, 433 usage cap, 505 model disabled) fail that generation
 * with a plain reason, pause submissions for ACCOUNT_PAUSE (an ERROR once per
 * change for the operator), and generations that queue meanwhile fail at
 * once with the same reason rather than wait for nothing.
 *
 * Delivery, once as far as possible: the result is downloaded (bounded,
 * `ResultDownload`), sent as a photo with "✅ Готово!" and the "🔁 Ещё
 * вариант" / "🖼 Новая картинка" keyboard (as a document with the same caption
 * when Telegram would not take it as a photo), its message id recorded at
 * once, then the uncompressed original (SEND_ORIGINAL_DOCUMENT), then
 * `delivered`, then the status message is deleted. A resumed row whose result
 * message is recorded gets no second one.
 *
 * The remaining duplicate window: between Telegram accepting a send and our
 * database recording its message id (one UPDATE, retried for about two
 * minutes, and remembered in memory for the rest of the term), a crash or a
 * lost leadership makes the next leader send that message again. The same
 * holds for a send whose answer is lost (a timeout after the upload reached
 * Telegram): it is retried, because a paid picture that never arrives is
 * worse than one that arrives twice. The failure notice has the same window
 * only when it is a new message; when it replaces the status message (an
 * edit) repeating it is harmless.
 *
 * Deadlines: a row past `deadline_at` (created + GENERATION_TIMEOUT_MS) is
 * failed with the "took too long" reason (or, while Kie is unavailable, that
 * reason) and the retry button; a `succeeded` one gets DELIVERY_GRACE more,
 * since its picture exists. Every failed row is told to its user once
 * (`notified_at`): its status message becomes the failure message, or a new
 * message is sent. All time comes from `Clock` (UTC), so tests drive it with
 * TestClock.
 *
 * Leadership scope close: a success exit (graceful release) stops taking
 * work, lets in-flight createTask requests and deliveries finish within
 * SHUTDOWN_TIMEOUT_MS, then stops; submissions still waiting for the budget
 * stop at once (their rows stay `queued`). A failure or interrupt exit
 * (leadership lost) stops everything at once. Either way every row is left
 * resumable.
 */
import { PgClient } from "@effect/sql-pg"
import {
  Cause,
  Clock,
  DateTime,
  Deferred,
  Duration,
  Effect,
  Exit,
  FiberMap,
  FiberSet,
  Layer,
  Metric,
  Option,
  PubSub,
  Queue,
  Ref,
  Result,
  Schedule,
  Schema,
  Semaphore
} from "effect"
import type { SqlError } from "effect/sql/SqlError"
import { InputFile } from "grammy"
import { AppConfig } from "../platform/AppConfig.ts"
import { CHANNEL, type Generation, Generations } from "../generations/Generations.ts"
import { GenerationEngineStatus, type SubmissionPause } from "../generations/GenerationsHealth.ts"
import { fitsAsPhoto, imageInfo } from "../media/ImageInfo.ts"
import {
  decodeRecordData,
  isTerminal,
  Kie,
  type KieCreateTaskError,
  type KieError,
  KieTaskFailed,
  type TaskState,
  type TerminalTaskState
} from "../kie/Kie.ts"
import { KieCallbacks, type StoredCallback } from "../kie/KieCallback.ts"
import * as KieRateBudget from "../kie/KieRateBudget.ts"
import { doneKeyboard, retryKeyboard, t } from "../chat/Messages.ts"
import { generationSecondsHistogram, generationsFinished } from "../platform/Metrics.ts"
import { makeProblemLog } from "../platform/ProblemLog.ts"
import { DownloadFailed, hostOf, ResultDownload } from "../media/ResultDownload.ts"
import { Telegram, type TelegramError } from "../telegram/Telegram.ts"
import { bookkeepingPolicy, backoff, listenPolicy } from "../platform/Retry.ts"

// ---------------------------------------------------------------------------
// Policies

/** Deadlines, deliveries, notices and recovery are checked at least this often. */
export const SWEEP_INTERVAL = Duration.seconds(5)
/** Rows looked at per kind per sweep. */
export const SWEEP_BATCH = 200
/** recordInfo allows about 10 requests/s (per key or per task: sources disagree); we stay within it per key. */
export const RECORD_INFO_RATE = { count: 10, window: Duration.seconds(1) } as const
/** recordInfo requests in flight or waiting for the limiter at once. */
export const MAX_CONCURRENT_POLLS = 20
/** Longest sleep of the poller when nothing is due. */
export const POLL_IDLE = Duration.seconds(5)
/** Polling again after recordInfo answered with something only an operator can fix (401, 402...). */
export const POLL_AFTER_ACCOUNT_ERROR = Duration.seconds(30)
/** How often status messages are considered for an edit. */
export const STATUS_TICK = Duration.seconds(2)
/** One status message is edited at most this often. */
export const STATUS_EDIT_INTERVAL = Duration.seconds(10)
/** Edits in one chat are at least this far apart (groups allow about 20 a minute). */
export const STATUS_CHAT_SPACING = Duration.seconds(3)
/** Status edits per tick, all chats together. */
export const STATUS_EDITS_PER_TICK = 20
/** Downloads and uploads at once. */
export const DELIVERY_CONCURRENCY = 4
/** A `succeeded` row (its picture exists and is paid for) gets this long past its deadline to be delivered. */
export const DELIVERY_GRACE = Duration.minutes(10)
/** Submissions stop this long after an account problem (credits, usage cap, key, model). */
export const ACCOUNT_PAUSE = Duration.minutes(2)
/** After KIE_REQUEST_TIMEOUT_MS plus this, a `submitting` row nobody is sending has certainly been answered or lost. */
export const UNCERTAIN_SETTLE = Duration.seconds(10)

/** Pause after the n-th consecutive createTask that proved Kie unavailable: 15 s doubling, at most 2 min. */
export const transientPause = (streak: number): Duration.Duration =>
  Duration.millis(Math.min(120_000, 15_000 * 2 ** Math.max(0, streak - 1)))

/** Downloading the result: 3 more tries, 2 s, 4 s, 8 s apart (jittered). */
export const downloadPolicy = backoff("2 seconds", "8 seconds").pipe(Schedule.upTo({ times: 3 }))
/** Sending the result after a transient Telegram error: up to 6 more tries, 2 s doubling to 30 s. */
export const sendPolicy = backoff("2 seconds", "30 seconds").pipe(Schedule.upTo({ times: 6 }))

/** Our own `beforeSend` declined: nothing was sent to Kie. */
export class SubmissionCancelled extends Schema.TaggedError<SubmissionCancelled>()("SubmissionCancelled", {
  message: Schema.String
}) {}

type FinishOutcome = "delivered" | "failed" | "timeout"

/** createTask errors that prove nothing was created: try again later. */
const NOTHING_CREATED = new Set<KieError["_tag"]>([
  "KieRateLimited",
  "KieMaintenance",
  "KieServerError",
  "KieConnectionFailed"
])
/** createTask errors only an operator can fix. */
const ACCOUNT_PROBLEMS = new Set<KieError["_tag"]>([
  "KieUnauthorized",
  "KieInsufficientCredits",
  "KieUsageLimitExceeded",
  "KieFeatureDisabled"
])
const TRANSIENT_TELEGRAM = new Set<TelegramError["_tag"]>([
  "TelegramNetworkError",
  "TelegramServerError",
  "TelegramRateLimited"
])

/** A callback's state, when it is trusted and final. */
const trustedState = (taskId: string, callback: StoredCallback | undefined): TerminalTaskState | undefined => {
  if (callback === undefined || !callback.trusted) return undefined
  const decoded = decodeRecordData("recordInfo", taskId, callback.data)
  return Result.isSuccess(decoded) && isTerminal(decoded.success) ? decoded.success : undefined
}

const secondsBetween = (from: DateTime.Utc, to: DateTime.Utc) =>
  Math.max(0, (DateTime.toEpochMillis(to) - DateTime.toEpochMillis(from)) / 1000)

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

export const layer: Layer.Layer<never, never, Requirements> = Layer.effectDiscard(Effect.gen(function*() {
  const config = yield* AppConfig
  const generations = yield* Generations
  const kie = yield* Kie
  const callbacks = yield* KieCallbacks
  const budget = yield* KieRateBudget.KieRateBudget
  const telegram = yield* Telegram
  const pg = yield* PgClient.PgClient
  const downloads = yield* ResultDownload
  const status = yield* GenerationEngineStatus

  const webhookMode = Option.isSome(config.publicUrl)
  const pollLimiter = yield* KieRateBudget.make(RECORD_INFO_RATE)
  const deliveryPermits = yield* Semaphore.make(DELIVERY_CONCURRENCY)

  const submitWake = yield* Queue.dropping<void>(1)
  const pollWake = yield* Queue.dropping<void>(1)
  const sweepWake = yield* Queue.dropping<void>(1)
  const wake = (queue: Queue.Queue<void>) => Queue.offer(queue, undefined).pipe(Effect.asVoid)
  const sleepOrWake = (queue: Queue.Queue<void>, duration: Duration.Duration) =>
    Queue.take(queue).pipe(Effect.timeoutOption(duration), Effect.asVoid)

  // Fibers of this term. Made before the finalizer below, so it runs first.
  const background = yield* FiberSet.make()
  const polls = yield* FiberSet.make()
  const submissionFibers = yield* FiberMap.make<string>()
  const jobs = yield* FiberMap.make<string>()

  /** Generations this term is submitting: waiting for a budget slot, or with the request out. */
  const submissions = new Map<string, "waiting" | "sending">()
  /** Generations with a poll in flight. */
  const polling = new Set<string>()
  /** Result messages Telegram accepted this term, in case recording them failed. */
  const sentResults = new Map<string, number>()
  /** Last status edit per chat (epoch millis). */
  const chatEditedAt = new Map<number, number>()
  /**
   * A progress edit and the final edit of one status message must not cross:
   * a status tick decides on its edits from rows it read before, so without
   * this its "⏳ … 1:00" could reach Telegram after the failure notice and
   * wipe its text and retry button. Progress edits being sent, by generation;
   * and generations whose final edit has begun, which no progress edit may
   * touch any more (cleared when a tick starts: rows read from then on are
   * already final in the database).
   */
  const progressEditsInFlight = new Map<string, Deferred.Deferred<void>>()
  const finalEditBegun = new Set<string>()
  let draining = false
  let transientStreak = 0
  let accountProblem: string | undefined
  /**
   * createTask requests sent so far this term, and how many had been sent
   * when the current pause began: an answer to a request sent before that
   * (submissions overlap) neither lifts nor lengthens the pause.
   */
  let sent = 0
  let sentBeforePause = 0
  const pollProblems = makeProblemLog()
  const pauseProblems = makeProblemLog()

  // -------------------------------------------------------------------------
  // Helpers

  const logState = (id: string, change: string, taskId?: string | null, detail?: string) =>
    Effect.logInfo(
      `[GEN] generation ${id}: ${change}${taskId ? ` (task ${taskId})` : ""}${detail ? `: ${detail}` : ""}`
    ).pipe(Effect.annotateLogs({ generation_id: id, ...(taskId ? { task_id: taskId } : {}) }))

  /** A state write retried through a blip; logged and `None` if the database stays away. */
  const bookkeeping = <A>(what: string, effect: Effect.Effect<A, SqlError>) =>
    effect.pipe(
      Effect.retry(bookkeepingPolicy),
      Effect.tapError((error) => Effect.logError(`[GEN] could not record ${what}: ${error.message}`)),
      Effect.option
    )

  const finished = (outcome: FinishOutcome) =>
    Metric.update(Metric.withAttributes(generationsFinished, { outcome }), 1)

  const startJob = (key: string, job: Effect.Effect<void>) =>
    draining
      ? Effect.void
      : FiberMap.run(jobs, key, job.pipe(
        Effect.catchCause((cause) =>
          Cause.hasInterruptsOnly(cause) ? Effect.failCause(cause) : Effect.logError(`[GEN] ${key} failed`, cause)
        )
      ), { onlyIfMissing: true }).pipe(Effect.asVoid)

  const jobRunning = (key: string) => FiberMap.hasUnsafe(jobs, key)

  const activePause = Effect.gen(function*() {
    const pause = yield* Ref.get(status.pause)
    const now = yield* Clock.currentTimeMillis
    return Option.filter(pause, (p) => p.untilMillis > now)
  })

  const startPause = (kind: SubmissionPause["kind"], duration: Duration.Duration, error: KieError) =>
    Effect.gen(function*() {
      sentBeforePause = sent
      const now = yield* Clock.currentTimeMillis
      const untilMillis = now + Duration.toMillis(duration)
      yield* Ref.set(
        status.pause,
        Option.some({ untilMillis, kind, code: error._tag, detail: error.message, userReason: error.userReason })
      )
      if (kind === "account") {
        const problem = `${error._tag}: ${error.message}`
        if (problem !== accountProblem) {
          accountProblem = problem
          yield* Effect.logError(
            `[GEN] Kie refused createTask (${error.message}): an operator must act; submissions paused for ${
              Duration.format(duration)
            } at a time, waiting generations are told the service is unavailable`
          )
        }
      } else {
        yield* pauseProblems.failing(
          `[GEN] Kie is not accepting tasks (${error._tag}); submissions paused with backoff (now ${
            Duration.format(duration)
          }), waiting generations keep their place`
        )
      }
    })

  /** A request sent before the current pause began: its answer says nothing new. */
  const sentBeforeThePause = (sendNumber: number) =>
    Effect.map(activePause, (pause) => Option.isSome(pause) && sendNumber <= sentBeforePause)

  const submissionsWork = (sendNumber: number) => Effect.gen(function*() {
    if (yield* sentBeforeThePause(sendNumber)) return
    transientStreak = 0
    if (accountProblem !== undefined) {
      accountProblem = undefined
      yield* Effect.logInfo("[GEN] Kie accepts tasks again")
    }
    yield* pauseProblems.recovered("[GEN] Kie accepts tasks again")
    yield* Ref.set(status.pause, Option.none())
  })

  /** Fails a generation (any unfinished status) and starts telling its user. */
  const failGeneration = (
    g: Generation,
    code: string,
    message: string,
    reason: string | undefined,
    outcome: FinishOutcome = "failed",
    from: Generation["status"] = g.status
  ) =>
    Effect.gen(function*() {
      const marked = yield* bookkeeping(`generation ${g.id} as failed`, generations.markFailed(g.id, code, message, reason))
      if (Option.isNone(marked) || !marked.value) return false
      yield* logState(g.id, `${from} → failed (${code})`, g.kieTaskId, message)
      yield* finished(outcome)
      yield* startJob(`notify:${g.id}`, notify(g.id))
      return true
    })

  // -------------------------------------------------------------------------
  // Submitting

  const submit = (g: Generation, entered: Deferred.Deferred<void>) =>
    Effect.gen(function*() {
      let announced = false
      let sendNumber = 0
      const outcome = yield* Effect.result(kie.createTask<SubmissionCancelled | SqlError>({
        prompt: g.prompt,
        aspectRatio: g.aspectRatio,
        beforeSend: (ref) =>
          Effect.gen(function*() {
            if (draining) return yield* new SubmissionCancelled({ message: "the engine is stopping" })
            // Another submission may have paused Kie while this one waited for its slot.
            if (Option.isSome(yield* activePause)) {
              return yield* new SubmissionCancelled({ message: "submissions are paused" })
            }
            const marked = yield* generations.markSubmitting(g.id, ref)
            if (!marked) return yield* new SubmissionCancelled({ message: "the generation is no longer waiting" })
            sendNumber = ++sent
            submissions.set(g.id, "sending")
            yield* Deferred.succeed(entered, undefined)
            if (!announced) {
              announced = true
              yield* logState(g.id, "queued → submitting")
            }
          })
      }))
      const now = yield* DateTime.now

      if (outcome._tag === "Success") {
        const taskId = outcome.success
        const recorded = yield* bookkeeping(
          `task ${taskId} of generation ${g.id}`,
          generations.markSubmitted(g.id, taskId, DateTime.addDuration(now, config.kiePollInterval))
        )
        yield* submissionsWork(sendNumber)
        if (Option.isNone(recorded)) return // the registry has ref → task id; the sweep recovers it
        if (recorded.value) yield* logState(g.id, "submitting → submitted", taskId)
        else yield* Effect.logWarning(`[GEN] task ${taskId} was created for generation ${g.id}, which no longer waited for it`)
        return yield* wake(pollWake)
      }

      const error = outcome.failure
      switch (error._tag) {
        case "SubmissionCancelled":
          // Before a retry of the same call: the earlier attempts proved nothing was created.
          if (announced) {
            yield* bookkeeping(`generation ${g.id} as queued again`, generations.requeue(g.id))
            yield* logState(g.id, "submitting → queued", null, error.message)
          }
          return yield* Effect.logDebug(`[GEN] generation ${g.id} not submitted: ${error.message}`)
        case "SqlError":
          // The row stays queued, or `submitting` with nothing sent (then it is treated as unknown).
          return yield* Effect.logWarning(`[GEN] generation ${g.id}: could not mark it submitting: ${error.message}`)
      }
      const kieError: KieCreateTaskError = error
      if (kieError._tag === "KieCreateTaskUncertain" && kieError.recoverable) {
        yield* Effect.logWarning(
          `[GEN] generation ${g.id}: createTask may have created a task (${kieError.reason}); waiting for Kie's callback to reveal it until the deadline`
        )
        return yield* wake(sweepWake)
      }
      const stale = yield* sentBeforeThePause(sendNumber)
      if (NOTHING_CREATED.has(kieError._tag)) {
        yield* bookkeeping(`generation ${g.id} as queued again`, generations.requeue(g.id))
        yield* logState(g.id, "submitting → queued", null, `${kieError._tag}, nothing was created`)
        if (stale) return
        transientStreak++
        return yield* startPause("transient", transientPause(transientStreak), kieError)
      }
      yield* failGeneration(
        g,
        kieError._tag,
        kieError.message,
        kieError.userReason[g.lang],
        "failed",
        announced ? "submitting" : "queued"
      )
      if (ACCOUNT_PROBLEMS.has(kieError._tag)) {
        const current = yield* Ref.get(status.pause)
        const alreadyKnown = stale && Option.isSome(current) && current.value.kind === "account"
        if (!alreadyKnown) yield* startPause("account", ACCOUNT_PAUSE, kieError)
      } else if (kieError._tag === "KieUnexpectedResponse" && !stale) {
        transientStreak++
        yield* startPause("transient", transientPause(transientStreak), kieError)
      }
    })

  /** Starts `g`'s createTask and returns once it holds a budget slot (or ended). */
  const startSubmission = (g: Generation) =>
    Effect.gen(function*() {
      const entered = yield* Deferred.make<void>()
      submissions.set(g.id, "waiting")
      yield* FiberMap.run(
        submissionFibers,
        g.id,
        submit(g, entered).pipe(
          Effect.catchCause((cause) =>
            Cause.hasInterruptsOnly(cause)
              ? Effect.failCause(cause)
              : Effect.logError(`[GEN] submitting generation ${g.id} failed unexpectedly`, cause)
          ),
          Effect.ensuring(Effect.sync(() => submissions.delete(g.id))),
          Effect.ensuring(Deferred.succeed(entered, undefined))
        )
      )
      yield* Deferred.await(entered)
    })

  const submitStep: Effect.Effect<"more" | "idle", SqlError> = Effect.gen(function*() {
    const pause = yield* activePause
    if (Option.isSome(pause)) {
      const now = yield* Clock.currentTimeMillis
      yield* Effect.sleep(Duration.millis(pause.value.untilMillis - now))
      return "more"
    }
    yield* budget.awaitFreeSlot
    const [next] = yield* generations.nextQueued(1, [...submissions.keys()])
    if (next === undefined) return "idle"
    if (DateTime.isLessThanOrEqualTo(next.deadlineAt, yield* DateTime.now)) {
      yield* expire(next)
      return "more"
    }
    yield* startSubmission(next)
    return "more"
  })

  const submitLoop = Effect.gen(function*() {
    const problems = makeProblemLog()
    for (;;) {
      const step = yield* Effect.result(submitStep)
      if (step._tag === "Failure") {
        yield* problems.failing(`[GEN] submitting stalled, retrying: ${step.failure.message}`)
        yield* sleepOrWake(submitWake, SWEEP_INTERVAL)
        continue
      }
      yield* problems.recovered("[GEN] submitting works again")
      if (step.success === "idle") yield* sleepOrWake(submitWake, SWEEP_INTERVAL)
    }
  })

  // -------------------------------------------------------------------------
  // Results: polling and callbacks

  const settle = (g: Generation, state: TerminalTaskState) =>
    Effect.gen(function*() {
      if (state._tag === "Success") {
        const marked = yield* bookkeeping(`the result of generation ${g.id}`, generations.markSucceeded(g.id, state.resultUrls))
        if (Option.isNone(marked) || !marked.value) return
        yield* logState(g.id, "submitted → succeeded", state.taskId)
        return yield* startJob(`deliver:${g.id}`, deliver(g.id))
      }
      const error = new KieTaskFailed({
        taskId: state.taskId,
        failCode: state.failCode,
        failMsg: state.failMsg,
        message: `Kie task ${state.taskId} failed: ${state.failCode} ${state.failMsg}`.trim().slice(0, 500)
      })
      yield* failGeneration(g, "KieTaskFailed", error.message, error.userReason[g.lang])
    })

  const pollOne = (g: Generation) =>
    Effect.gen(function*() {
      const taskId = g.kieTaskId!
      const result = yield* Effect.result(pollLimiter.withPermit(kie.getTaskOnce(taskId)))
      const now = yield* DateTime.now
      const again = (after: Duration.Duration) =>
        bookkeeping(`the next poll of generation ${g.id}`, generations.schedulePoll(g.id, DateTime.addDuration(now, after)))
      if (Result.isSuccess(result)) {
        yield* pollProblems.recovered("[GEN] recordInfo works again")
        const state: TaskState = result.success
        if (isTerminal(state)) return yield* settle(g, state)
        yield* Effect.logDebug(`[GEN] generation ${g.id}: task ${taskId} is ${state._tag}`)
        return yield* again(config.kiePollInterval)
      }
      const error = result.failure
      if (error.retryable) {
        yield* pollProblems.failing(`[GEN] polling Kie failed, trying again: ${error.message}`)
        return yield* again(config.kiePollInterval)
      }
      if (error._tag === "KieNotFound") {
        return yield* failGeneration(g, error._tag, error.message, error.userReason[g.lang])
      }
      yield* pollProblems.failing(`[GEN] recordInfo refused (${error.message}): an operator must act`)
      yield* again(Duration.max(config.kiePollInterval, POLL_AFTER_ACCOUNT_ERROR))
    })

  const pollRound: Effect.Effect<Duration.Duration, SqlError> = Effect.gen(function*() {
    const room = MAX_CONCURRENT_POLLS - polling.size
    if (room <= 0) return POLL_IDLE // a finishing poll wakes the loop
    const due = yield* generations.dueForPolling(room, [...polling])
    if (due.length > 0) {
      const stored = yield* callbacks.lookupMany(due.map((g) => g.kieTaskId!)).pipe(
        Effect.orElseSucceed(() => new Map<string, StoredCallback>())
      )
      for (const g of due) {
        const state = trustedState(g.kieTaskId!, stored.get(g.kieTaskId!))
        polling.add(g.id)
        yield* FiberSet.run(
          polls,
          (state === undefined ? pollOne(g) : settle(g, state)).pipe(
            Effect.ensuring(Effect.sync(() => polling.delete(g.id)).pipe(Effect.andThen(wake(pollWake))))
          )
        )
      }
      if (due.length === room) return Duration.zero
    }
    const next = yield* generations.nextPollAt([...polling])
    const now = yield* Clock.currentTimeMillis
    return Option.match(next, {
      onNone: () => POLL_IDLE,
      onSome: (at) => Duration.millis(Math.min(Duration.toMillis(POLL_IDLE), Math.max(0, DateTime.toEpochMillis(at) - now)))
    })
  })

  const pollLoop = Effect.gen(function*() {
    const problems = makeProblemLog()
    for (;;) {
      const round = yield* Effect.result(pollRound)
      if (round._tag === "Failure") {
        yield* problems.failing(`[GEN] polling stalled, retrying: ${round.failure.message}`)
        yield* sleepOrWake(pollWake, POLL_IDLE)
        continue
      }
      yield* problems.recovered("[GEN] polling works again")
      yield* sleepOrWake(pollWake, round.success)
    }
  })

  /** Settles every `submitted` row whose trusted callback is stored (after a resync or at start). */
  const checkStoredCallbacks = Effect.gen(function*() {
    const submitted = yield* generations.withStatus("submitted", 1000)
    if (submitted.length === 0) return
    const stored = yield* callbacks.lookupMany(submitted.map((g) => g.kieTaskId!))
    for (const g of submitted) {
      const state = trustedState(g.kieTaskId!, stored.get(g.kieTaskId!))
      if (state !== undefined) yield* settle(g, state)
    }
  })

  const onArrived = (taskId: string) =>
    Effect.gen(function*() {
      const found = yield* generations.findByTaskId(taskId)
      if (Option.isNone(found)) return yield* wake(sweepWake) // maybe the task of a `submitting` row
      const g = found.value
      if (g.status !== "submitted") return
      const stored = yield* callbacks.lookup(taskId)
      const state = trustedState(taskId, Option.getOrUndefined(stored))
      if (state !== undefined) return yield* settle(g, state)
      // A hint: ask recordInfo now rather than believe it.
      yield* generations.schedulePoll(g.id, yield* DateTime.now)
      yield* wake(pollWake)
    })

  const callbackLoop = Effect.scoped(Effect.gen(function*() {
    const subscription = yield* callbacks.subscribe
    yield* checkStoredCallbacks.pipe(
      Effect.catch((error) => Effect.logWarning(`[GEN] checking stored callbacks failed: ${error.message}`))
    )
    for (;;) {
      const signal = yield* PubSub.take(subscription)
      const handled = signal._tag === "Arrived"
        ? onArrived(signal.taskId)
        : checkStoredCallbacks.pipe(Effect.andThen(wake(sweepWake)), Effect.andThen(wake(pollWake)))
      yield* handled.pipe(
        Effect.catch((error) => Effect.logWarning(`[GEN] handling a Kie callback failed (polling covers it): ${error.message}`))
      )
    }
  }))

  // -------------------------------------------------------------------------
  // Delivery

  const download = (g: Generation) =>
    Effect.gen(function*() {
      let last: DownloadFailed | undefined
      for (const url of g.resultUrls) {
        const result = yield* Effect.result(downloads.download(url).pipe(
          Effect.tapError((error) => Effect.logWarning(`[GEN] generation ${g.id}: ${error.message}; retrying`)),
          Effect.retry(downloadPolicy)
        ))
        if (Result.isSuccess(result)) return Option.some(result.success)
        last = result.failure
      }
      yield* failGeneration(
        g,
        "download_failed",
        last?.message ?? `no result URL (${g.resultUrls.map(hostOf).join(", ")})`,
        t(g.lang).deliveryFailed
      )
      return Option.none<Uint8Array>()
    })

  /** A Telegram send, retried on transient errors (see the duplicate window in the module comment). */
  const sending = <A>(what: string, g: Generation, send: Effect.Effect<A, TelegramError>) =>
    send.pipe(
      Effect.tapError((error) =>
        TRANSIENT_TELEGRAM.has(error._tag)
          ? Effect.logWarning(`[GEN] generation ${g.id}: ${what} failed, retrying: ${error.message}`)
          : Effect.void
      ),
      Effect.retry({ schedule: sendPolicy, while: (error) => TRANSIENT_TELEGRAM.has(error._tag) }),
      Effect.result
    )

  type SendOutcome = "sent" | "gone" | "later"

  /** What a failed send means for the delivery. */
  const sendFailed = (g: Generation, what: string, error: TelegramError) =>
    Effect.gen(function*() {
      if (error._tag === "TelegramChatBlocked") {
        yield* failGeneration(g, "chat_blocked", `${what}: ${error.description}`, undefined)
        return "gone" as const
      }
      const log = error._tag === "TelegramUnauthorized" ? Effect.logError : Effect.logWarning
      yield* log(`[GEN] generation ${g.id}: ${what} failed, trying again later: ${error.message}`)
      return "later" as const
    })

  const recordResultMessage = (g: Generation, messageId: number, alsoOriginal: boolean) =>
    Effect.gen(function*() {
      sentResults.set(g.id, messageId)
      yield* bookkeeping(`the result message of generation ${g.id}`, generations.setPhotoMessage(g.id, messageId))
      if (alsoOriginal) {
        yield* bookkeeping(`the original of generation ${g.id}`, generations.setDocumentMessage(g.id, messageId))
      }
    })

  const sendResult = (g: Generation, bytes: Uint8Array): Effect.Effect<SendOutcome> =>
    Effect.gen(function*() {
      const info = imageInfo(bytes)
      const filename = `zimage-${g.id}.${info?.format === "jpeg" ? "jpg" : info?.format ?? "png"}`
      const caption = t(g.lang).done
      const reply_markup = doneKeyboard(g.lang, g.id)
      if (fitsAsPhoto(bytes.length, info)) {
        const photo = yield* sending(
          "sendPhoto",
          g,
          Effect.suspend(() => telegram.sendPhoto({ chat_id: g.chatId, photo: new InputFile(bytes, filename), caption, reply_markup }))
        )
        if (Result.isSuccess(photo)) {
          yield* recordResultMessage(g, photo.success.message_id, false)
          yield* logState(g.id, "photo sent", g.kieTaskId, `message ${photo.success.message_id}`)
          if (config.sendOriginalDocument) yield* sendOriginal(g, bytes, filename)
          return "sent"
        }
        // Telegram could not process it as a photo: it still goes, as a file.
        if (photo.failure._tag !== "TelegramBadRequest") return yield* sendFailed(g, "sendPhoto", photo.failure)
        yield* Effect.logWarning(`[GEN] generation ${g.id}: sendPhoto refused (${photo.failure.description}); sending a document`)
      }
      const document = yield* sending(
        "sendDocument",
        g,
        Effect.suspend(() =>
          telegram.sendDocument({ chat_id: g.chatId, document: new InputFile(bytes, filename), caption, reply_markup })
        )
      )
      if (Result.isFailure(document)) {
        if (document.failure._tag === "TelegramBadRequest") {
          yield* failGeneration(g, "delivery_failed", document.failure.message, t(g.lang).deliveryFailed)
          return "gone"
        }
        return yield* sendFailed(g, "sendDocument", document.failure)
      }
      yield* recordResultMessage(g, document.success.message_id, true)
      yield* logState(g.id, "result sent as a document", g.kieTaskId, `${bytes.length} bytes, message ${document.success.message_id}`)
      return "sent"
    })

  /** The uncompressed original; its failure never undoes the delivery. */
  const sendOriginal = (g: Generation, bytes: Uint8Array, filename: string) =>
    Effect.gen(function*() {
      const sent = yield* sending(
        "sendDocument",
        g,
        Effect.suspend(() =>
          telegram.sendDocument({
            chat_id: g.chatId,
            document: new InputFile(bytes, filename),
            caption: t(g.lang).originalCaption
          })
        )
      )
      if (Result.isFailure(sent)) {
        return yield* Effect.logWarning(`[GEN] generation ${g.id}: the original was not sent: ${sent.failure.message}`)
      }
      yield* bookkeeping(`the original of generation ${g.id}`, generations.setDocumentMessage(g.id, sent.success.message_id))
    })

  /** Deletes (or, failing that, finalizes) a status message that still shows progress. */
  const finalizeStatus = (g: Generation, messageId: number) =>
    Effect.gen(function*() {
      yield* settleStatusMessage(g.id)
      const deleted = yield* Effect.result(telegram.deleteMessage({ chat_id: g.chatId, message_id: messageId }))
      if (Result.isFailure(deleted)) {
        const error = deleted.failure
        if (TRANSIENT_TELEGRAM.has(error._tag)) return // the sweep tries again
        if (error._tag === "TelegramBadRequest") {
          // Too old to delete, or already gone: leave it saying it is done.
          yield* telegram.editMessageText({ chat_id: g.chatId, message_id: messageId, text: t(g.lang).done }).pipe(
            Effect.ignore
          )
        }
      }
      yield* bookkeeping(`the status message of generation ${g.id}`, generations.clearStatusMessage(g.id, messageId))
    })

  const deliver = (id: string): Effect.Effect<void> =>
    Semaphore.withPermit(
      deliveryPermits,
      Effect.gen(function*() {
        const found = yield* generations.find(id)
        if (Option.isNone(found) || found.value.status !== "succeeded") return
        let g = found.value
        const remembered = sentResults.get(id)
        if (g.photoMessageId === null && remembered !== undefined) {
          yield* recordResultMessage(g, remembered, false)
          g = { ...g, photoMessageId: remembered }
        }
        if (g.photoMessageId === null) {
          const bytes = yield* download(g)
          if (Option.isNone(bytes)) return
          const outcome = yield* sendResult(g, bytes.value)
          if (outcome !== "sent") return
        } else if (config.sendOriginalDocument && g.documentMessageId === null) {
          // Resumed after the photo went out: only the original is missing.
          yield* logState(g.id, "resuming delivery: the photo was sent, sending the original")
          const bytes = yield* downloads.download(g.resultUrls[0] ?? "").pipe(Effect.retry(downloadPolicy), Effect.option)
          if (Option.isSome(bytes)) {
            const info = imageInfo(bytes.value)
            yield* sendOriginal(g, bytes.value, `zimage-${g.id}.${info?.format === "jpeg" ? "jpg" : info?.format ?? "png"}`)
          }
        } else {
          yield* logState(g.id, "resuming delivery: the result was already sent")
        }
        const delivered = yield* bookkeeping(`generation ${g.id} as delivered`, generations.markDelivered(g.id))
        if (Option.isNone(delivered) || !delivered.value) return
        sentResults.delete(g.id)
        const now = yield* DateTime.now
        yield* logState(g.id, "succeeded → delivered", g.kieTaskId)
        yield* finished("delivered")
        yield* Metric.update(generationSecondsHistogram, secondsBetween(g.createdAt, now))
        if (g.statusMessageId !== null) yield* finalizeStatus(g, g.statusMessageId)
      }).pipe(
        Effect.catch((error) => Effect.logWarning(`[GEN] delivering generation ${id}: ${error.message}; the sweep retries`))
      )
    )

  // -------------------------------------------------------------------------
  // Failure notices

  const notify = (id: string): Effect.Effect<void> =>
    Effect.gen(function*() {
      const found = yield* generations.find(id)
      if (Option.isNone(found)) return
      const g = found.value
      if (g.status !== "failed" || Option.isSome(g.notifiedAt)) return
      const text = t(g.lang).failed(g.failReason ?? t(g.lang).unavailable)
      const reply_markup = retryKeyboard(g.lang, g.id)
      const told = (consumed?: number) =>
        Effect.gen(function*() {
          yield* bookkeeping(`the failure notice of generation ${g.id}`, generations.markNotified(g.id, consumed))
          yield* logState(g.id, consumed === undefined ? "user told (new message)" : "user told (status message)")
        })
      if (g.statusMessageId !== null) {
        yield* settleStatusMessage(g.id)
        const edited = yield* Effect.result(
          telegram.editMessageText({ chat_id: g.chatId, message_id: g.statusMessageId, text, reply_markup })
        )
        if (Result.isSuccess(edited)) return yield* told(g.statusMessageId)
        const error = edited.failure
        if (error._tag === "TelegramChatBlocked") return yield* told(g.statusMessageId)
        if (error._tag !== "TelegramBadRequest") {
          return yield* Effect.logWarning(`[GEN] telling generation ${g.id}'s user failed, trying again later: ${error.message}`)
        }
        // The status message is gone or cannot be edited: a new message instead.
        yield* generations.clearStatusMessage(g.id, g.statusMessageId)
      }
      const sent = yield* Effect.result(telegram.sendMessage({ chat_id: g.chatId, text, reply_markup }))
      if (Result.isSuccess(sent)) return yield* told()
      const error = sent.failure
      if (error._tag === "TelegramChatBlocked" || error._tag === "TelegramBadRequest") {
        yield* Effect.logInfo(`[GEN] generation ${g.id}: its user cannot be told (${error.message})`)
        return yield* told()
      }
      yield* Effect.logWarning(`[GEN] telling generation ${g.id}'s user failed, trying again later: ${error.message}`)
    }).pipe(
      Effect.catch((error) => Effect.logWarning(`[GEN] notifying generation ${id}: ${error.message}; the sweep retries`))
    )

  // -------------------------------------------------------------------------
  // Sweep: deadlines, recovery, and anything a wake-up missed

  const expire = (g: Generation) =>
    Effect.gen(function*() {
      const pause = yield* activePause
      const reason = g.status === "queued" && Option.isSome(pause)
        ? pause.value.userReason[g.lang]
        : t(g.lang).timedOut
      yield* failGeneration(
        g,
        "timeout",
        `not finished within ${Duration.format(config.generationTimeout)} (was ${g.status})`,
        reason,
        "timeout"
      )
    })

  /** A `submitting` row nobody in this term is sending: find its task, or give up on it. */
  const recover = (g: Generation, now: DateTime.Utc) =>
    Effect.gen(function*() {
      const taskId = g.submitRef === null ? Option.none<string>() : yield* kie.recoverTask(g.submitRef)
      if (Option.isSome(taskId)) {
        const marked = yield* generations.markSubmitted(g.id, taskId.value, now)
        if (marked) {
          yield* logState(g.id, "submitting → submitted (task found by its ref)", taskId.value)
          yield* wake(pollWake)
        }
        return
      }
      const sentAt = Option.getOrElse(g.submittedAt, () => g.updatedAt)
      const settledAt = DateTime.addDuration(sentAt, Duration.sum(config.kieRequestTimeout, UNCERTAIN_SETTLE))
      if (webhookMode || DateTime.isLessThan(now, settledAt)) return
      yield* failGeneration(
        g,
        "KieCreateTaskUncertain",
        "createTask was sent but its answer never recorded (restart or failover); no callback can reveal the task in polling mode",
        t(g.lang).unconfirmed
      )
    })

  const sweep = Effect.gen(function*() {
    const now = yield* DateTime.now
    for (const g of yield* generations.overdue(SWEEP_BATCH, DELIVERY_GRACE)) {
      if (submissions.get(g.id) === "sending" || jobRunning(`deliver:${g.id}`)) continue
      yield* expire(g)
    }
    const pause = yield* activePause
    if (Option.isSome(pause) && pause.value.kind === "account") {
      for (const g of yield* generations.withStatus("queued", SWEEP_BATCH)) {
        if (submissions.has(g.id)) continue
        yield* failGeneration(g, pause.value.code, `not submitted: ${pause.value.detail}`, pause.value.userReason[g.lang])
      }
    }
    for (const g of yield* generations.withStatus("submitting", SWEEP_BATCH)) {
      if (!submissions.has(g.id)) yield* recover(g, now)
    }
    for (const g of yield* generations.withStatus("succeeded", SWEEP_BATCH)) {
      yield* startJob(`deliver:${g.id}`, deliver(g.id))
    }
    for (const g of yield* generations.failedUnnotified(SWEEP_BATCH)) {
      yield* startJob(`notify:${g.id}`, notify(g.id))
    }
    for (const g of yield* generations.openStatusMessages(SWEEP_BATCH)) {
      const messageId = g.statusMessageId
      if (messageId !== null) {
        yield* startJob(`finalize:${g.id}`, finalizeStatus(g, messageId))
      }
    }
  })

  const sweepLoop = Effect.gen(function*() {
    const problems = makeProblemLog()
    for (;;) {
      const result = yield* Effect.result(sweep)
      if (result._tag === "Failure") yield* problems.failing(`[GEN] sweep failed, retrying: ${result.failure.message}`)
      else yield* problems.recovered("[GEN] sweeps work again")
      yield* sleepOrWake(sweepWake, SWEEP_INTERVAL)
    }
  })

  // -------------------------------------------------------------------------
  // Status messages

  const desiredStatus = (g: Generation, positions: ReadonlyMap<string, number>, now: DateTime.Utc) => {
    const texts = t(g.lang)
    if (g.status === "queued") {
      const position = positions.get(g.id)
      return position === undefined ? texts.generating : texts.generatingQueued(position)
    }
    return texts.generatingElapsed(secondsBetween(g.createdAt, now))
  }

  /** Before a final edit of a status message: no progress edit starts after this, and one being sent has ended. */
  const settleStatusMessage = (id: string) =>
    Effect.suspend(() => {
      finalEditBegun.add(id)
      const inFlight = progressEditsInFlight.get(id)
      return inFlight === undefined ? Effect.void : Deferred.await(inFlight)
    })

  /** Sends a progress edit unless the generation's final edit has begun; registers it while it is out. */
  const whileNotFinal = <A>(id: string, send: Effect.Effect<A>): Effect.Effect<Option.Option<A>> =>
    Effect.suspend(() => {
      if (finalEditBegun.has(id) || progressEditsInFlight.has(id)) return Effect.succeedNone
      const done = Deferred.makeUnsafe<void>()
      progressEditsInFlight.set(id, done)
      return Effect.asSome(send).pipe(
        Effect.ensuring(Effect.sync(() => {
          progressEditsInFlight.delete(id)
          Deferred.doneUnsafe(done, Exit.void)
        }))
      )
    })

  const editStatus = (g: Generation, messageId: number, text: string) =>
    Effect.gen(function*() {
      const attempt = yield* whileNotFinal(
        g.id,
        Effect.result(telegram.editMessageText({ chat_id: g.chatId, message_id: messageId, text }))
      )
      if (Option.isNone(attempt)) return
      const edited = attempt.value
      if (Result.isSuccess(edited)) return yield* generations.setStatusText(g.id, text)
      const error = edited.failure
      // Deleted by the user, or not editable: stop editing it; a failure notice will be a new message.
      if (error._tag === "TelegramBadRequest") return yield* generations.clearStatusMessage(g.id, messageId)
      yield* Effect.logDebug(`[GEN] status edit of generation ${g.id} skipped: ${error.message}`)
    }).pipe(Effect.catch((error) => Effect.logDebug(`[GEN] status edit: ${error.message}`)))

  const statusTick = Effect.gen(function*() {
    // The previous tick's edits have all ended; this tick reads fresh rows.
    finalEditBegun.clear()
    const now = yield* DateTime.now
    const nowMillis = DateTime.toEpochMillis(now)
    const spacing = Duration.toMillis(STATUS_CHAT_SPACING)
    for (const [chat, at] of chatEditedAt) if (nowMillis - at >= spacing) chatEditedAt.delete(chat)
    const rows = yield* generations.statusesToRefresh(DateTime.subtractDuration(now, STATUS_EDIT_INTERVAL), 500)
    if (rows.length === 0) return
    const positions = rows.some((g) => g.status === "queued")
      ? new Map((yield* generations.queuePositions).map((p) => [p.id, p.position]))
      : new Map<string, number>()
    const edits: Array<{ g: Generation; messageId: number; text: string }> = []
    for (const g of rows) {
      if (edits.length >= STATUS_EDITS_PER_TICK) break
      if (g.statusMessageId === null || chatEditedAt.has(g.chatId)) continue
      const text = desiredStatus(g, positions, now)
      if (text === g.statusText) continue
      chatEditedAt.set(g.chatId, nowMillis)
      edits.push({ g, messageId: g.statusMessageId, text })
    }
    yield* Effect.forEach(edits, (e) => editStatus(e.g, e.messageId, e.text), { concurrency: 5, discard: true })
  })

  const statusLoop = Effect.gen(function*() {
    const problems = makeProblemLog()
    for (;;) {
      const result = yield* Effect.result(statusTick)
      if (result._tag === "Failure") yield* problems.failing(`[GEN] status updates failed, retrying: ${result.failure.message}`)
      else yield* problems.recovered("[GEN] status updates work again")
      yield* Effect.sleep(STATUS_TICK)
    }
  })

  // -------------------------------------------------------------------------
  // New rows: LISTEN

  const listenProblems = makeProblemLog()
  const listenLoop = Effect.gen(function*() {
    const notifications = yield* pg.listen(CHANNEL)
    // Anything recorded while we were not listening is picked up now.
    yield* wake(submitWake)
    yield* listenProblems.recovered(`[GEN] listening on ${CHANNEL} again`)
    yield* Queue.take(notifications).pipe(
      Effect.andThen(wake(submitWake)),
      Effect.andThen(wake(sweepWake)),
      Effect.forever
    )
  }).pipe(
    Effect.scoped,
    Effect.tapError((error) =>
      listenProblems.failing(`[GEN] LISTEN ${CHANNEL} failed, reconnecting (the sweep covers meanwhile): ${error.message}`)
    ),
    Effect.retry(listenPolicy)
  )

  // -------------------------------------------------------------------------
  // Life cycle

  yield* Effect.addFinalizer((exit) =>
    Effect.gen(function*() {
      draining = true
      const graceful = Exit.isSuccess(exit)
      yield* FiberSet.clear(background)
      yield* FiberSet.clear(polls)
      // Still waiting for the budget: nothing sent, the rows stay queued.
      for (const [id, phase] of submissions) {
        if (phase === "waiting") yield* FiberMap.remove(submissionFibers, id)
      }
      if (graceful) {
        const sendingCount = yield* FiberMap.size(submissionFibers)
        const jobCount = yield* FiberMap.size(jobs)
        if (sendingCount + jobCount > 0) {
          yield* Effect.logInfo(
            `[GEN] draining: ${sendingCount} createTask request(s) and ${jobCount} delivery/notice job(s) in flight`
          )
          const done = yield* Effect.all([FiberMap.awaitEmpty(submissionFibers), FiberMap.awaitEmpty(jobs)]).pipe(
            Effect.timeoutOption(config.shutdownTimeout),
            Effect.ignore,
            Effect.as(true)
          )
          const left = (yield* FiberMap.size(submissionFibers)) + (yield* FiberMap.size(jobs))
          if (done && left > 0) {
            yield* Effect.logWarning(
              `[GEN] ${left} job(s) still running after ${Duration.format(config.shutdownTimeout)}; stopping them (the next leader resumes them)`
            )
          }
        }
      }
      yield* FiberMap.clear(submissionFibers)
      yield* FiberMap.clear(jobs)
      yield* Ref.set(status.running, false)
      yield* Effect.logInfo(`[GEN] engine stopped (${graceful ? "released" : "leadership lost"})`)
    })
  )

  const counts = yield* generations.counts.pipe(Effect.option)
  // Kie's window still counts what the previous leader sent: take those slots first. Looking back
  // a little further than a slot is ever held (window + margin + EARLIER_SEND_SLACK) is enough.
  const startedAt = yield* DateTime.now
  const earlierSlots = yield* generations.sentSince(
    DateTime.subtractDuration(startedAt, Duration.sum(config.kieCreateRate.window, Duration.seconds(5)))
  ).pipe(
    Effect.flatMap((sends) => budget.recordEarlierSends(sends.map(DateTime.toEpochMillis))),
    Effect.catch((error) =>
      Effect.as(Effect.logWarning(`[GEN] could not read recent createTask requests (the budget starts empty): ${error.message}`), 0)
    )
  )
  yield* Ref.set(status.running, true)
  yield* Effect.logInfo(
    `[GEN] engine started${
      Option.match(counts, {
        onNone: () => "",
        onSome: (c) =>
          `: resuming ${c.queued} queued, ${c.submitting} submitting, ${c.submitted} submitted, ${c.succeeded} succeeded`
      })
    }; ${earlierSlots} createTask budget slot(s) held for requests sent in the last window`
  )
  yield* FiberSet.run(background, listenLoop)
  yield* FiberSet.run(background, callbackLoop)
  yield* FiberSet.run(background, sweepLoop)
  yield* FiberSet.run(background, submitLoop)
  yield* FiberSet.run(background, pollLoop)
  yield* FiberSet.run(background, statusLoop)
}))

/** The engine with its own download client. */
export const layerWithDownloads: Layer.Layer<never, never, Exclude<Requirements, ResultDownload>> = layer.pipe(
  Layer.provide(ResultDownload.layer)
)
