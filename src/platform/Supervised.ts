/**
 * Supervised loops: "log a problem once, retry, log the recovery".
 *
 * When to use: a background loop that must keep going through outages (a
 * database blip, Telegram away) without writing one line per failed attempt.
 *
 * Details: a problem is logged as a warning when it starts or turns into a
 * different problem (`ProblemLog`), and the recovery is logged once. The loop
 * itself never fails.
 *
 * Gotchas: the effect passed in is retried or repeated as a whole, so it must
 * be safe to run again from its start.
 */
import { Effect, type Schedule } from "effect"
import { makeProblemLog, type ProblemLog } from "./ProblemLog.ts"

/** How a supervised loop reports itself. */
export interface SupervisedMessages<E> {
  /** The warning for a failure (logged once per distinct message). */
  readonly failing: (error: E) => string
  /** The line logged when a run succeeds after a reported failure. */
  readonly recovered: string
}

/**
 * Runs `effect` until it succeeds, waiting by `policy` between failures.
 * Fails only if `policy` gives up (then with the last error).
 */
export const retryLogged = <A, E, R>(
  effect: Effect.Effect<A, E, R>,
  policy: Schedule.Schedule<unknown, E>,
  messages: SupervisedMessages<E>,
  problems: ProblemLog = makeProblemLog()
): Effect.Effect<A, E, R> =>
  effect.pipe(
    Effect.tap(() => problems.recovered(messages.recovered)),
    Effect.tapError((error) => problems.failing(messages.failing(error))),
    Effect.retry(policy)
  )

/**
 * Runs `pass` forever, waiting by `every` between runs; a failed pass is
 * reported and the loop goes on with the next one.
 */
export const repeatLogged = <A, E, R>(
  pass: Effect.Effect<A, E, R>,
  every: Schedule.Schedule<unknown, unknown>,
  messages: SupervisedMessages<E>
): Effect.Effect<never, never, R> => {
  const problems = makeProblemLog()
  return pass.pipe(
    Effect.tap(() => problems.recovered(messages.recovered)),
    Effect.catch((error: E) => problems.failing(messages.failing(error))),
    Effect.repeat(every),
    Effect.andThen(Effect.never)
  )
}
