/**
 * What the parts of the engine share for one leadership term: the wake-up
 * queues, the fibers of the term, the job registry and the generations this
 * term is submitting. Nothing here outlives the term; a successor rebuilds
 * all of it from the rows.
 *
 * When to use: every part takes the term it runs in; a test makes its own
 * (`make`, in a scope) to drive one part alone.
 *
 * Details:
 * - Wake-ups: `submit`, `poll` and `sweep` each have a queue holding at most
 *   one pending wake-up; a loop sleeps until woken or until its longest
 *   sleep is over (`wokenOrAfter`), so a burst of wake-ups costs one pass.
 * - Jobs: deliveries and failure notices run as short fibers keyed by
 *   `deliver:<id>` / `notify:<id>` / `finalize:<id>`; starting a key that is
 *   already running does nothing, so the sweep can start them again freely.
 * - Submissions: a generation is `waiting` (for a createTask budget slot,
 *   nothing sent) or `sending` (the request may be out). The sweep leaves
 *   these rows alone; `stop` drops the waiting ones at once.
 *
 * Gotchas: `stop` must run before the scope closes the fiber sets made here
 * (add its finalizer after `make`), so a graceful release can let the
 * in-flight requests and jobs finish.
 */
import { Cause, Duration, Effect, FiberMap, FiberSet, Queue, Schedule, type Scope } from "effect"

/** The loops that can be woken before their longest sleep is over. */
export type WakeUp = "submit" | "poll" | "sweep"

/**
 * Where one submission of this term stands: waiting for a budget slot, with
 * the createTask request out, or (an edit) uploading its pictures first.
 */
export type SubmissionPhase = "waiting" | "sending" | "uploading"

/** The shared state of one term (see the module doc). */
export interface EngineTerm {
  /** Wakes a loop now (a wake-up already pending is enough). */
  readonly wake: (which: WakeUp) => Effect.Effect<void>
  /**
   * Repeat policy of a woken loop: after each pass, wait until woken or for
   * `longest(output)` (the pass's output; `undefined` after a failed pass).
   * `undefined` goes on at once, leaving a pending wake-up for later.
   */
  readonly wokenOrAfter: <A>(
    which: WakeUp,
    longest: (output: A | undefined) => Duration.Duration | undefined
  ) => Schedule.Schedule<
    number,
    unknown
  >
  /** The term's loops; cleared first when the term ends. */
  readonly background: FiberSet.FiberSet
  /** recordInfo polls in flight. */
  readonly polls: FiberSet.FiberSet
  /** createTask requests of this term, keyed by generation id. */
  readonly submissionFibers: FiberMap.FiberMap<string>
  /** Generations this term is submitting: uploading, waiting for a budget slot, or with the request out. */
  readonly submissions: Map<string, SubmissionPhase>
  /** True once the term is ending: no new job or createTask starts. */
  readonly draining: () => boolean
  /** Runs `job` under `key` unless one runs already or the term is ending; its failure is logged. */
  readonly startJob: (key: string, job: Effect.Effect<void>) => Effect.Effect<void>
  /** Whether a job with `key` is running. */
  readonly jobRunning: (key: string) => boolean
  /**
   * Ends the term: stops the loops and polls, drops submissions still waiting
   * for the budget, and on a graceful release lets createTask requests and
   * jobs in flight finish within `shutdownTimeout`; then stops everything.
   */
  readonly stop: (graceful: boolean, shutdownTimeout: Duration.Duration) => Effect.Effect<void>
}

/** A fresh term; its fibers are interrupted when the scope closes. */
export const make: Effect.Effect<EngineTerm, never, Scope.Scope> = Effect.gen(function*() {
  const queues: Record<WakeUp, Queue.Queue<void>> = {
    submit: yield* Queue.dropping<void>(1),
    poll: yield* Queue.dropping<void>(1),
    sweep: yield* Queue.dropping<void>(1)
  }
  const background = yield* FiberSet.make()
  const polls = yield* FiberSet.make()
  const submissionFibers = yield* FiberMap.make<string>()
  const jobs = yield* FiberMap.make<string>()
  const submissions = new Map<string, SubmissionPhase>()
  let draining = false

  const wake = (which: WakeUp) => Queue.offer(queues[which], undefined).pipe(Effect.asVoid)

  const sleepOrWake = (which: WakeUp, duration: Duration.Duration) =>
    Queue.take(queues[which]).pipe(Effect.timeoutOption(duration), Effect.asVoid)

  const wokenOrAfter = <A>(which: WakeUp, longest: (output: A | undefined) => Duration.Duration | undefined) =>
    Schedule.forever.pipe(Schedule.tap((meta) => {
      const wait = longest(meta.input as A | undefined)
      return wait === undefined ? Effect.void : sleepOrWake(which, wait)
    }))

  const startJob = (key: string, job: Effect.Effect<void>) =>
    draining
      ? Effect.void
      : FiberMap.run(
        jobs,
        key,
        job.pipe(
          Effect.catchCause((cause) =>
            Cause.hasInterruptsOnly(cause) ? Effect.failCause(cause) : Effect.logError(`[GEN] ${key} failed`, cause)
          )
        ),
        { onlyIfMissing: true }
      ).pipe(Effect.asVoid)

  const stop = (graceful: boolean, shutdownTimeout: Duration.Duration) =>
    Effect.gen(function*() {
      draining = true
      yield* FiberSet.clear(background)
      yield* FiberSet.clear(polls)
      // Still waiting for the budget: nothing sent, the rows stay queued.
      for (const [id, phase] of submissions) {
        if (phase === "waiting") yield* FiberMap.remove(submissionFibers, id)
      }
      if (graceful) yield* drain(shutdownTimeout)
      yield* FiberMap.clear(submissionFibers)
      yield* FiberMap.clear(jobs)
    })

  /** Lets createTask requests and jobs in flight finish, for at most `shutdownTimeout`. */
  const drain = (shutdownTimeout: Duration.Duration) =>
    Effect.gen(function*() {
      const sendingCount = yield* FiberMap.size(submissionFibers)
      const jobCount = yield* FiberMap.size(jobs)
      if (sendingCount + jobCount === 0) return
      yield* Effect.logInfo(
        `[GEN] draining: ${sendingCount} createTask request(s) and ${jobCount} delivery/notice job(s) in flight`
      )
      yield* Effect.all([FiberMap.awaitEmpty(submissionFibers), FiberMap.awaitEmpty(jobs)]).pipe(
        Effect.timeoutOption(shutdownTimeout),
        Effect.ignore
      )
      const left = (yield* FiberMap.size(submissionFibers)) + (yield* FiberMap.size(jobs))
      if (left > 0) {
        yield* Effect.logWarning(
          `[GEN] ${left} job(s) still running after ${
            Duration.format(shutdownTimeout)
          }; stopping them (the next leader resumes them)`
        )
      }
    })

  return {
    wake,
    wokenOrAfter,
    background,
    polls,
    submissionFibers,
    submissions,
    draining: () => draining,
    startJob,
    jobRunning: (key) => FiberMap.hasUnsafe(jobs, key),
    stop
  }
})
