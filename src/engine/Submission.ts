/**
 * Submitting `queued` generations to Kie (createTask), within the createTask
 * budget, oldest first and one per user per round.
 *
 * When to use: `loop` runs for the term, woken by `submit` wake-ups (new
 * rows).
 *
 * Details: the loop waits until the budget has a free slot, then takes the
 * next row in fair order (`Generations.nextQueued`) and starts its createTask
 * in its own fiber. The row is marked `submitting` (with the `ref` of its
 * callBackUrl) *inside* the budget permit, right before the request leaves
 * (`Kie.createTask`'s `beforeSend`): a crash while waiting for the budget
 * leaves it `queued` (safe to send), a crash after leaves it `submitting`
 * (unknown; the sweep recovers it). The task id is stored with `submitted`
 * in one statement. Never a second createTask for a generation: only
 * `queued` rows are submitted.
 *
 * | createTask outcome                          | the row               | then                                  |
 * | ------------------------------------------- | --------------------- | ------------------------------------- |
 * | a task id                                   | submitted             | the poller woken, the pause lifted    |
 * | cancelled before sending (paused, stopping) | queued (again)        | nothing                               |
 * | maybe created (recoverable uncertainty)     | submitting            | the sweep waits for the callback      |
 * | nothing created (429, 455, 5xx, network)    | queued again          | transient pause                       |
 * | an account problem (401, 402, 433, 505)     | failed, user told     | account pause                         |
 * | anything else                               | failed, user told     | transient pause if unexpected         |
 *
 * Gotchas: a generation already past its deadline is failed here rather
 * than sent (`expire`).
 */
import { Cause, Clock, DateTime, Deferred, Duration, Effect, FiberMap, Option, Schema } from "effect"
import type { SqlError } from "effect/sql/SqlError"
import { type Generation, Generations } from "../generations/Generations.ts"
import { Kie, type KieCreateTaskError, type KieError } from "../kie/Kie.ts"
import * as KieRateBudget from "../kie/KieRateBudget.ts"
import { AppConfig } from "../platform/AppConfig.ts"
import { repeatLogged } from "../platform/Supervised.ts"
import { Telegram } from "../telegram/Telegram.ts"
import { makeEditInputs } from "./EditInputs.ts"
import { t } from "../texts/Messages.ts"
import type { AccountPause } from "./AccountPause.ts"
import { bookkeeping, logState } from "./Bookkeeping.ts"
import type { EngineTerm } from "./EngineTerm.ts"
import type { FailureNotices } from "./FailureNotices.ts"
import { SWEEP_INTERVAL, type Sweep } from "./Sweep.ts"

/** Our own `beforeSend` declined: nothing was sent to Kie. */
export class SubmissionCancelled extends Schema.TaggedError<SubmissionCancelled>()("SubmissionCancelled", {
  message: Schema.String
}) {}

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

/**
 * What the user is told: a refused field other than the prompt (a picture,
 * a ratio) is the model refusing the request, not the words.
 */
const userReasonOf = (g: Generation, error: KieCreateTaskError): string =>
  error._tag === "KieValidationFailed" && /input\.(?!prompt)\w+|image|url/i.test(error.message)
    ? t(g.lang).kieReasons.refusedField
    : error.userReason[g.lang]

/** One createTask call: whether its row was marked `submitting` (logged once), and its send number. */
interface SendingState {
  announced: boolean
  number: number
}

/** The submissions of one term. */
export interface Submission {
  /**
   * Submits for the term: waits out a pause or a full budget, starts the next
   * submission; when none waits, sleeps until woken (or SWEEP_INTERVAL). A
   * failure is logged once.
   */
  readonly loop: Effect.Effect<never>
}

/** The submissions of a term. */
export const make = (
  term: EngineTerm,
  parts: {
    readonly pause: AccountPause
    readonly notices: Pick<FailureNotices, "fail">
    readonly sweep: Pick<Sweep, "expire">
  }
): Effect.Effect<Submission, never, AppConfig | Generations | Kie | KieRateBudget.KieRateBudget | Telegram> =>
  Effect.gen(function*() {
    const config = yield* AppConfig
    const generations = yield* Generations
    const kie = yield* Kie
    const editInputs = makeEditInputs(yield* Telegram, kie, generations)
    const budget = yield* KieRateBudget.KieRateBudget
    const { notices, pause, sweep } = parts

    /** The row is ready to go right before the request leaves: marked `submitting` under `ref`. */
    const beforeSend = (g: Generation, entered: Deferred.Deferred<void>, sending: SendingState) => (ref: string) =>
      Effect.gen(function*() {
        if (term.draining()) return yield* new SubmissionCancelled({ message: "the engine is stopping" })
        // Another submission may have paused Kie while this one waited for its slot.
        if (Option.isSome(yield* pause.active)) {
          return yield* new SubmissionCancelled({ message: "submissions are paused" })
        }
        const marked = yield* generations.markSubmitting(g.id, ref)
        if (!marked) return yield* new SubmissionCancelled({ message: "the generation is no longer waiting" })
        sending.number = pause.nextSend()
        term.submissions.set(g.id, "sending")
        yield* Deferred.succeed(entered, undefined)
        if (!sending.announced) {
          sending.announced = true
          yield* logState(g.id, "queued → submitting")
        }
      })

    const created = (g: Generation, taskId: string, sendNumber: number) =>
      Effect.gen(function*() {
        const now = yield* DateTime.now
        const recorded = yield* bookkeeping(
          `task ${taskId} of generation ${g.id}`,
          generations.markSubmitted(g.id, taskId, DateTime.addDuration(now, config.kiePollInterval))
        )
        yield* pause.accepted(sendNumber)
        if (Option.isNone(recorded)) return // the registry has ref → task id; the sweep recovers it
        if (recorded.value) {
          yield* logState(g.id, "submitting → submitted", taskId)
        } else {
          yield* Effect.logWarning(
            `[GEN] task ${taskId} was created for generation ${g.id}, which no longer waited for it`
          )
        }
        yield* term.wake("poll")
      })

    const refused = (g: Generation, error: KieCreateTaskError, sending: SendingState) =>
      Effect.gen(function*() {
        if (error._tag === "KieCreateTaskUncertain" && error.recoverable) {
          yield* Effect.logWarning(
            `[GEN] generation ${g.id}: createTask may have created a task (${error.reason}); waiting for Kie's callback to reveal it until the deadline`
          )
          return yield* term.wake("sweep")
        }
        const stale = yield* pause.sentBeforeThePause(sending.number)
        if (NOTHING_CREATED.has(error._tag)) {
          yield* bookkeeping(`generation ${g.id} as queued again`, generations.requeue(g.id))
          yield* logState(g.id, "submitting → queued", null, `${error._tag}, nothing was created`)
          if (!stale) yield* pause.pauseTransient(error)
          return
        }
        const from = sending.announced ? "submitting" : "queued"
        // The operator's log names the model (Kie's 422 and our own check name the field).
        yield* notices.fail(
          g,
          error._tag,
          `model ${g.model}: ${error.message}`,
          userReasonOf(g, error),
          "failed",
          from
        )
        if (ACCOUNT_PROBLEMS.has(error._tag)) yield* pause.pauseAccount(error, stale)
        else if (error._tag === "KieUnexpectedResponse" && !stale) yield* pause.pauseTransient(error)
      })

    const submit = Effect.fn("Engine.submit")(function*(g: Generation, entered: Deferred.Deferred<void>) {
      yield* Effect.annotateCurrentSpan("generation_id", g.id)
      const sending: SendingState = { announced: false, number: 0 }
      // An edit's pictures first: a stored step, done once (see EditInputs).
      const images = yield* Effect.result(editInputs.prepare(g))
      if (images._tag === "Failure") {
        const error = images.failure
        yield* notices.fail(g, error.code, error.message, error.reason, "failed", "queued")
        return
      }
      const outcome = yield* Effect.result(kie.createTask<SubmissionCancelled | SqlError>({
        model: g.model,
        prompt: g.prompt,
        aspectRatio: g.aspectRatio,
        imageUrls: images.success,
        beforeSend: beforeSend(g, entered, sending)
      }))
      if (outcome._tag === "Success") return yield* created(g, outcome.success, sending.number)
      const error = outcome.failure
      switch (error._tag) {
        case "SubmissionCancelled":
          // Before a retry of the same call: the earlier attempts proved nothing was created.
          if (sending.announced) {
            yield* bookkeeping(`generation ${g.id} as queued again`, generations.requeue(g.id))
            yield* logState(g.id, "submitting → queued", null, error.message)
          }
          return yield* Effect.logDebug(`[GEN] generation ${g.id} not submitted: ${error.message}`)
        case "SqlError":
          // The row stays queued, or `submitting` with nothing sent (then it is treated as unknown).
          return yield* Effect.logWarning(`[GEN] generation ${g.id}: could not mark it submitting: ${error.message}`)
      }
      yield* refused(g, error, sending)
    })

    /**
     * An edit's upload runs as a job of its own, beside the loop: a slow
     * download or upload holds up no other submission. Once its URLs are
     * stored the row is queued as before and the loop (woken) sends it.
     */
    const startUpload = (g: Generation) =>
      Effect.gen(function*() {
        term.submissions.set(g.id, "uploading")
        yield* term.startJob(
          `upload of generation ${g.id}`,
          Effect.gen(function*() {
            const images = yield* Effect.result(editInputs.prepare(g))
            if (images._tag === "Failure") {
              const error = images.failure
              yield* notices.fail(g, error.code, error.message, error.reason, "failed", "queued")
            }
          }).pipe(
            Effect.ensuring(Effect.sync(() => term.submissions.delete(g.id))),
            Effect.ensuring(term.wake("submit"))
          )
        )
        if (term.draining()) term.submissions.delete(g.id)
      })

    /** Starts `g`'s createTask and returns once it holds a budget slot (or ended). */
    const start = (g: Generation) =>
      Effect.gen(function*() {
        const entered = yield* Deferred.make<void>()
        term.submissions.set(g.id, "waiting")
        yield* FiberMap.run(
          term.submissionFibers,
          g.id,
          submit(g, entered).pipe(
            Effect.catchCause((cause) =>
              Cause.hasInterruptsOnly(cause)
                ? Effect.failCause(cause)
                : Effect.logError(`[GEN] submitting generation ${g.id} failed unexpectedly`, cause)
            ),
            Effect.ensuring(Effect.sync(() => term.submissions.delete(g.id))),
            Effect.ensuring(Deferred.succeed(entered, undefined))
          )
        )
        yield* Deferred.await(entered)
      })

    /** One decision: wait out a pause or a full budget, then start the next submission; `idle` when none waits. */
    const step: Effect.Effect<"more" | "idle", SqlError> = Effect.gen(function*() {
      const paused = yield* pause.active
      if (Option.isSome(paused)) {
        const now = yield* Clock.currentTimeMillis
        yield* Effect.sleep(Duration.millis(paused.value.untilMillis - now))
        return "more"
      }
      yield* budget.awaitFreeSlot
      const [next] = yield* generations.nextQueued(1, [...term.submissions.keys()])
      if (next === undefined) return "idle"
      if (DateTime.isLessThanOrEqualTo(next.deadlineAt, yield* DateTime.now)) {
        yield* sweep.expire(next)
        return "more"
      }
      if (next.inputUrls === null && next.inputFileIds.length > 0) {
        yield* startUpload(next)
        return "more"
      }
      yield* start(next)
      return "more"
    })

    const loop = repeatLogged(
      step,
      term.wokenOrAfter<"more" | "idle">("submit", (step) => step === "more" ? undefined : SWEEP_INTERVAL),
      {
        failing: (error) => `[GEN] submitting stalled, retrying: ${error.message}`,
        recovered: "[GEN] submitting works again"
      }
    )

    return { loop }
  })
