/**
 * When submissions stop because Kie would refuse them, and for how long.
 *
 * When to use: the submission asks `active` before it takes a row and again
 * right before a request leaves; it reports each createTask answer here
 * (`accepted`, `pauseTransient`, `pauseAccount`); the sweep asks `active` to
 * fail queued rows at once during an account pause.
 *
 * Details: the pause lives in `GenerationEngineStatus.pause` (shown on
 * /health).
 *
 * | answer to createTask                     | pause                             | log                            |
 * | ---------------------------------------- | --------------------------------- | ------------------------------ |
 * | nothing created (429, 455, 5xx, network) | transient, 15 s doubling to 2 min | WARN once per problem          |
 * | an unexpected response                   | transient, as above               | WARN once per problem          |
 * | an account problem (401, 402, 433, 505)  | account, ACCOUNT_PAUSE at a time  | ERROR once per distinct one    |
 * | a task id                                | lifted, the streak reset          | INFO "Kie accepts tasks again" |
 *
 * Gotchas: submissions overlap, so an answer to a request sent before the
 * current pause began (`sentBeforeThePause`) neither lifts nor lengthens it;
 * each request takes a number from `nextSend` right before it leaves.
 */
import { Clock, Duration, Effect, Option, Ref } from "effect"
import { GenerationEngineStatus, type SubmissionPause } from "../generations/GenerationsHealth.ts"
import type { KieError } from "../kie/Kie.ts"
import { makeProblemLog } from "../platform/ProblemLog.ts"

/** Submissions stop this long after an account problem (credits, usage cap, key, model). */
export const ACCOUNT_PAUSE = Duration.minutes(2)

/** Pause after the n-th consecutive createTask that proved Kie unavailable: 15 s doubling, at most 2 min. */
export const transientPause = (streak: number): Duration.Duration =>
  Duration.millis(Math.min(120_000, 15_000 * 2 ** Math.max(0, streak - 1)))

/** The submission pause of one term. */
export interface AccountPause {
  /** The pause in force now, if any. */
  readonly active: Effect.Effect<Option.Option<SubmissionPause>>
  /** Numbers a createTask request that is about to leave. */
  readonly nextSend: () => number
  /** Whether request number `sendNumber` left before the current pause began (its answer says nothing new). */
  readonly sentBeforeThePause: (sendNumber: number) => Effect.Effect<boolean>
  /** Request `sendNumber` created a task: lift the pause (unless the answer is stale). */
  readonly accepted: (sendNumber: number) => Effect.Effect<void>
  /** Kie is unavailable: pause for the next step of the transient backoff. */
  readonly pauseTransient: (error: KieError) => Effect.Effect<void>
  /** Kie refused the account: pause for ACCOUNT_PAUSE, unless a stale answer repeats the pause in force. */
  readonly pauseAccount: (error: KieError, stale: boolean) => Effect.Effect<void>
}

/** The submission pause of a term (starting unpaused is up to the status service). */
export const make: Effect.Effect<AccountPause, never, GenerationEngineStatus> = Effect.gen(function*() {
  const status = yield* GenerationEngineStatus
  const pauseProblems = makeProblemLog()
  let transientStreak = 0
  let accountProblem: string | undefined
  /**
   * createTask requests sent so far this term, and how many had been sent
   * when the current pause began.
   */
  let sent = 0
  let sentBeforePause = 0

  const active = Effect.gen(function*() {
    const pause = yield* Ref.get(status.pause)
    const now = yield* Clock.currentTimeMillis
    return Option.filter(pause, (p) => p.untilMillis > now)
  })

  const start = (kind: SubmissionPause["kind"], duration: Duration.Duration, error: KieError) =>
    Effect.gen(function*() {
      sentBeforePause = sent
      const now = yield* Clock.currentTimeMillis
      const untilMillis = now + Duration.toMillis(duration)
      yield* Ref.set(
        status.pause,
        Option.some({ untilMillis, kind, code: error._tag, detail: error.message, userReason: error.userReason })
      )
      if (kind === "transient") {
        return yield* pauseProblems.failing(
          `[GEN] Kie is not accepting tasks (${error._tag}); submissions paused with backoff (now ${
            Duration.format(duration)
          }), waiting generations keep their place`
        )
      }
      const problem = `${error._tag}: ${error.message}`
      if (problem === accountProblem) return
      accountProblem = problem
      yield* Effect.logError(
        `[GEN] Kie refused createTask (${error.message}): an operator must act; submissions paused for ${
          Duration.format(duration)
        } at a time, waiting generations are told the service is unavailable`
      )
    })

  const sentBeforeThePause = (sendNumber: number) =>
    Effect.map(active, (pause) => Option.isSome(pause) && sendNumber <= sentBeforePause)

  const accepted = (sendNumber: number) =>
    Effect.gen(function*() {
      if (yield* sentBeforeThePause(sendNumber)) return
      transientStreak = 0
      if (accountProblem !== undefined) {
        accountProblem = undefined
        yield* Effect.logInfo("[GEN] Kie accepts tasks again")
      }
      yield* pauseProblems.recovered("[GEN] Kie accepts tasks again")
      yield* Ref.set(status.pause, Option.none())
    })

  const pauseTransient = (error: KieError) =>
    Effect.suspend(() => {
      transientStreak++
      return start("transient", transientPause(transientStreak), error)
    })

  const pauseAccount = (error: KieError, stale: boolean) =>
    Effect.gen(function*() {
      const current = yield* Ref.get(status.pause)
      const alreadyKnown = stale && Option.isSome(current) && current.value.kind === "account"
      if (!alreadyKnown) yield* start("account", ACCOUNT_PAUSE, error)
    })

  return { active, nextSend: () => ++sent, sentBeforeThePause, accepted, pauseTransient, pauseAccount }
})
