/**
 * Watching Kie for the results of `submitted` generations: polling
 * recordInfo, and Kie's callbacks.
 *
 * When to use: `pollLoop` and `callbackLoop` run for the term. A final
 * task state, from either, becomes `succeeded` (and the delivery starts) or
 * `failed` (and the notice starts).
 *
 * Details:
 * - Polling: one loop over due `submitted` rows (`next_poll_at`), a stored
 *   trusted callback first, else one recordInfo per row through its own
 *   limiter (RECORD_INFO_RATE), at most MAX_CONCURRENT_POLLS in flight. It
 *   sleeps until the next row is due (at most POLL_IDLE) or it is woken.
 * - Callbacks (`KieCallbacks.subscribe`): a trusted callback (it carries the
 *   task's ref) settles its generation at once; a hint makes it due for
 *   polling now; a resync re-checks the stored callbacks of every
 *   `submitted` row and wakes the sweep (a callback may reveal the task of a
 *   `submitting` row).
 *
 * | recordInfo answers                   | then                                          |
 * | ------------------------------------ | --------------------------------------------- |
 * | a final state                        | settled                                       |
 * | still running                        | polled again after KIE_POLL_INTERVAL_MS       |
 * | a retryable error                    | WARN once, polled again after the interval    |
 * | task not found                       | failed                                        |
 * | something only an operator can fix   | WARN once, polled again after at least 30 s   |
 *
 * Gotchas: a callback is never believed unless it is trusted; a hint only
 * makes recordInfo be asked sooner.
 */
import { Clock, DateTime, Duration, Effect, FiberSet, Option, PubSub, Redacted, Result } from "effect"
import type { SqlError } from "effect/sql/SqlError"
import { type Generation, Generations } from "../generations/Generations.ts"
import { decodeRecordData, isTerminal, Kie, KieTaskFailed, type TaskState, type TerminalTaskState } from "../kie/Kie.ts"
import { KieCallbacks, type StoredCallback } from "../kie/KieCallback.ts"
import { scrubKey } from "../kie/KieHttp.ts"
import * as KieRateBudget from "../kie/KieRateBudget.ts"
import { AppConfig } from "../platform/AppConfig.ts"
import { makeProblemLog } from "../platform/ProblemLog.ts"
import { repeatLogged } from "../platform/Supervised.ts"
import { bookkeeping, logState } from "./Bookkeeping.ts"
import type { Delivery } from "./Delivery.ts"
import type { EngineTerm } from "./EngineTerm.ts"
import type { FailureNotices } from "./FailureNotices.ts"

/** recordInfo allows about 10 requests/s (per key or per task: sources disagree); we stay within it per key. */
export const RECORD_INFO_RATE = { count: 10, window: Duration.seconds(1) } as const
/** recordInfo requests in flight or waiting for the limiter at once. */
export const MAX_CONCURRENT_POLLS = 20
/** Longest sleep of the poller when nothing is due. */
export const POLL_IDLE = Duration.seconds(5)
/** Polling again after recordInfo answered with something only an operator can fix (401, 402...). */
export const POLL_AFTER_ACCOUNT_ERROR = Duration.seconds(30)

/** A callback's state, when it is trusted and final. */
export const trustedState = (taskId: string, callback: StoredCallback | undefined): TerminalTaskState | undefined => {
  if (callback === undefined || !callback.trusted) return undefined
  const decoded = decodeRecordData("recordInfo", taskId, callback.data)
  return Result.isSuccess(decoded) && isTerminal(decoded.success) ? decoded.success : undefined
}

/** The result watch of one term. */
export interface ResultWatch {
  /** `pollRound` for the term, woken early by `poll` wake-ups. */
  readonly pollLoop: Effect.Effect<never>
  /** Follows Kie's callbacks for the term. */
  readonly callbackLoop: Effect.Effect<never>
}

/** The result watch of a term. */
export const make = (
  term: EngineTerm,
  parts: { readonly notices: Pick<FailureNotices, "fail">; readonly delivery: Pick<Delivery, "start"> }
): Effect.Effect<ResultWatch, never, AppConfig | Generations | Kie | KieCallbacks> =>
  Effect.gen(function*() {
    /** Generations with a poll in flight. */
    const polling = new Set<string>()
    const { delivery, notices } = parts
    const config = yield* AppConfig
    const scrub = scrubKey(Redacted.value(config.kieApiKey))
    const generations = yield* Generations
    const kie = yield* Kie
    const callbacks = yield* KieCallbacks
    const pollLimiter = yield* KieRateBudget.make(RECORD_INFO_RATE)
    const pollProblems = makeProblemLog()

    /** A final task state of a `submitted` generation: `succeeded` and delivered, or `failed` and told. */
    const settle = (g: Generation, state: TerminalTaskState) =>
      Effect.gen(function*() {
        if (state._tag === "Success") {
          const marked = yield* bookkeeping(
            `the result of generation ${g.id}`,
            generations.markSucceeded(g.id, state.resultUrls)
          )
          if (Option.isNone(marked) || !marked.value) return
          yield* logState(g.id, "submitted → succeeded", state.taskId)
          return yield* delivery.start(g.id)
        }
        // Kie's own words may echo the request, key included: cut it out before it is stored or shown.
        const failMsg = scrub(state.failMsg)
        const error = new KieTaskFailed({
          taskId: state.taskId,
          failCode: state.failCode,
          failMsg,
          message: `Kie task ${state.taskId} failed: ${state.failCode} ${failMsg}`.trim().slice(0, 500)
        })
        yield* notices.fail(g, "KieTaskFailed", `model ${g.model}: ${error.message}`, error.userReason[g.lang])
      })

    const pollOne = Effect.fn("Engine.poll")(function*(g: Generation) {
      yield* Effect.annotateCurrentSpan("generation_id", g.id)
      const taskId = g.kieTaskId!
      const result = yield* Effect.result(pollLimiter.withPermit(kie.getTaskOnce(taskId)))
      const now = yield* DateTime.now
      const again = (after: Duration.Duration) =>
        bookkeeping(
          `the next poll of generation ${g.id}`,
          generations.schedulePoll(g.id, DateTime.addDuration(now, after))
        )
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
        return yield* notices.fail(g, error._tag, error.message, error.userReason[g.lang])
      }
      yield* pollProblems.failing(`[GEN] recordInfo refused (${error.message}): an operator must act`)
      yield* again(Duration.max(config.kiePollInterval, POLL_AFTER_ACCOUNT_ERROR))
    })

    /** Starts polls for the due rows; returns how long the poller may sleep. */
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
            term.polls,
            (state === undefined ? pollOne(g) : settle(g, state)).pipe(
              Effect.ensuring(Effect.sync(() => polling.delete(g.id)).pipe(Effect.andThen(term.wake("poll"))))
            )
          )
        }
        if (due.length === room) return Duration.zero
      }
      const next = yield* generations.nextPollAt([...polling])
      const now = yield* Clock.currentTimeMillis
      return Option.match(next, {
        onNone: () => POLL_IDLE,
        onSome: (at) =>
          Duration.millis(Math.min(Duration.toMillis(POLL_IDLE), Math.max(0, DateTime.toEpochMillis(at) - now)))
      })
    })

    const pollLoop = repeatLogged(
      pollRound,
      term.wokenOrAfter<Duration.Duration>("poll", (sleep) => sleep ?? POLL_IDLE),
      {
        failing: (error) => `[GEN] polling stalled, retrying: ${error.message}`,
        recovered: "[GEN] polling works again"
      }
    )

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
        if (Option.isNone(found)) return yield* term.wake("sweep") // maybe the task of a `submitting` row
        const g = found.value
        if (g.status !== "submitted") return
        const stored = yield* callbacks.lookup(taskId)
        const state = trustedState(taskId, Option.getOrUndefined(stored))
        if (state !== undefined) return yield* settle(g, state)
        // A hint: ask recordInfo now rather than believe it.
        yield* generations.schedulePoll(g.id, yield* DateTime.now)
        yield* term.wake("poll")
      })

    const callbackLoop = Effect.scoped(Effect.gen(function*() {
      const subscription = yield* callbacks.subscribe
      yield* checkStoredCallbacks.pipe(
        Effect.catch((error) => Effect.logWarning(`[GEN] checking stored callbacks failed: ${error.message}`))
      )
      return yield* PubSub.take(subscription).pipe(
        Effect.flatMap((signal) =>
          signal._tag === "Arrived"
            ? onArrived(signal.taskId)
            : checkStoredCallbacks.pipe(Effect.andThen(term.wake("sweep")), Effect.andThen(term.wake("poll")))
        ),
        Effect.catch((error) =>
          Effect.logWarning(`[GEN] handling a Kie callback failed (polling covers it): ${error.message}`)
        ),
        Effect.forever
      )
    }))

    return { pollLoop, callbackLoop }
  })
