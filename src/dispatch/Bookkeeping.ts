/**
 * Recording what happened to an update, through database blips: the row's
 * state change (retried by `bookkeepingPolicy`) and the counters that follow
 * it.
 *
 * Gotchas: a write that still fails (or finds the row no longer this term's)
 * is logged and left: the row stays `processing` under this term, and the
 * next leader's reconciler returns it. Counters move only for rows a write
 * really changed, so `/metrics` never counts an update twice.
 */
import { Cause, Clock, Effect, Metric, Option } from "effect"
import * as Metrics from "../observability/Metrics.ts"
import { bookkeepingPolicy } from "../platform/Retry.ts"

/**
 * Runs a bookkeeping write, retried by `bookkeepingPolicy`; `None` if it
 * still failed (logged as "could not record <what>").
 */
export const record = <A, E>(what: string, write: Effect.Effect<A, E>): Effect.Effect<Option.Option<A>> =>
  write.pipe(
    // The policy's schedule is built only after a first failure: nearly every write succeeds at once.
    Effect.catchCause((cause) => {
      if (Cause.hasInterruptsOnly(cause)) return Effect.failCause(cause)
      let failedFirst = false
      const again = Effect.suspend(() => failedFirst ? write : (failedFirst = true, Effect.failCause(cause)))
      return Effect.retry(again, bookkeepingPolicy)
    }),
    Effect.tapCause((cause) =>
      Cause.hasInterruptsOnly(cause)
        ? Effect.void
        : Effect.logError(`[DISPATCH] could not record ${what}; the row stays with this term`)
    ),
    Effect.option
  )

/** What a failed run is recorded as: a short message, never a whole error object. */
export const describeFailure = (cause: Cause.Cause<unknown>): string => {
  const error = Cause.squash(cause)
  if (Cause.isTimeoutError(error)) return "handler timed out"
  const message = error instanceof Error ? `${error.name}: ${error.message}` : String(error)
  return message.slice(0, 2000)
}

/** How an update left the inbox. */
export type Outcome = "done" | "dead"

const processedAs = {
  done: Metrics.seriesOf(Metrics.updatesProcessed, { outcome: "done" }),
  dead: Metrics.seriesOf(Metrics.updatesProcessed, { outcome: "dead" })
}

/**
 * Rows a bookkeeping write changed: its count, 1 for `true`, 0 when the write
 * failed or the row was no longer this term's.
 */
const rowsChanged = (recorded: Option.Option<number | boolean>): number =>
  Option.match(recorded, { onNone: () => 0, onSome: (value) => (typeof value === "number" ? value : value ? 1 : 0) })

/** Counts rows recorded as finished (only once the write succeeded). */
export const countFinished = (outcome: Outcome, recorded: Option.Option<number | boolean>): Effect.Effect<void> =>
  rowsChanged(recorded) > 0 ? Metric.update(processedAs[outcome], rowsChanged(recorded)) : Effect.void

/** Counts one finished update and observes its time from claim (`claimedAtMillis`) to finish. */
export const countProcessed = (
  outcome: Outcome,
  recorded: Option.Option<number | boolean>,
  claimedAtMillis: number
): Effect.Effect<void> =>
  rowsChanged(recorded) === 0 ? Effect.void : Effect.andThen(
    Metric.update(processedAs[outcome], 1),
    Effect.flatMap(
      Clock.currentTimeMillis,
      (now) => Metric.update(Metrics.updateProcessingSeconds, Math.max(0, now - claimedAtMillis) / 1000)
    )
  )
