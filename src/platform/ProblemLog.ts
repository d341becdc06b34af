/**
 * "Logged once per change, not once per attempt": a retry loop reports a
 * problem when it starts (or turns into a different problem) and reports the
 * recovery once, instead of one line per failed attempt.
 */
import { Effect } from "effect"

export interface ProblemLog {
  /** Logs `message` as a warning unless it is the problem already reported. */
  readonly failing: (message: string) => Effect.Effect<void>
  /** Logs `message` if a problem was reported since; tells whether it was. */
  readonly recovered: (message: string) => Effect.Effect<boolean>
}

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
      })
  }
}
