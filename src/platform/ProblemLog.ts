/**
 * "Logged once per change, not once per attempt": a retry loop reports a
 * problem when it starts (or turns into a different problem) and reports the
 * recovery once, instead of one line per failed attempt.
 */
import { Effect } from "effect"

/** Where a retry loop reports its problems and its recovery. */
export interface ProblemLog {
  /** Logs `message` as a warning unless it is the problem already reported (for an outage log: any problem). */
  readonly failing: (message: string) => Effect.Effect<void>
  /** Logs `message` if a problem was reported since; tells whether it was. */
  readonly recovered: (message: string) => Effect.Effect<boolean>
  /** Whether a problem is reported and its recovery not yet: `recovered` has something to log. */
  readonly reporting: () => boolean
}

/** Reports a problem once per distinct message, and the recovery once. */
export const makeProblemLog = (): ProblemLog => {
  let current: string | undefined
  return {
    failing: (message) =>
      Effect.suspend(() => {
        if (message === current) return Effect.void
        current = message
        return Effect.logWarning(message)
      }),
    recovered: (message) =>
      Effect.suspend(() => {
        if (current === undefined) return Effect.succeed(false)
        current = undefined
        return Effect.as(Effect.logInfo(message), true)
      }),
    reporting: () => current !== undefined
  }
}

/**
 * Like `makeProblemLog`, but reports only the first problem of an outage: a
 * different message while still failing is not logged. For loops whose
 * failures all mean the same thing to an operator ("cannot connect").
 */
export const makeOutageLog = (): ProblemLog => {
  let failing = false
  return {
    failing: (message) =>
      Effect.suspend(() => {
        if (failing) return Effect.void
        failing = true
        return Effect.logWarning(message)
      }),
    recovered: (message) =>
      Effect.suspend(() => {
        if (!failing) return Effect.succeed(false)
        failing = false
        return Effect.as(Effect.logInfo(message), true)
      }),
    reporting: () => failing
  }
}
