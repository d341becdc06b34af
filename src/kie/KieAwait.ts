/**
 * Waiting for one task's result: polling recordInfo and listening for its
 * callback at once, under a deadline.
 *
 * When to use: a caller that waits for a single task. The generation engine
 * does not: it polls all its tasks in batches with its own schedule and rate
 * limit (`Kie.getTaskOnce`, `KieCallbacks.lookupMany`/`subscribe`).
 *
 * Details: `awaitResult` races two ways of learning the final state and takes
 * the first:
 * - polling: `getTask` every KIE_POLL_INTERVAL_MS; a retryable error waits
 *   for the next round, any other ends the wait;
 * - callbacks (on any instance, see `KieCallback.ts`): a trusted stored
 *   callback is believed; an untrusted one (a hint) makes it ask recordInfo.
 *   Storage errors leave the work to polling.
 * Both stop at GENERATION_TIMEOUT_MS with `KieGenerationTimeout`. A `fail`
 * state is `KieTaskFailed`.
 */
import { Duration, Effect, Option, Redacted, Result, Schedule } from "effect"
import { AppConfig } from "../platform/AppConfig.ts"
import { Kie } from "./Kie.ts"
import { KieCallbacks } from "./KieCallback.ts"
import { type KieAwaitError, KieGenerationTimeout, type KieGetTaskError, KieTaskFailed } from "./KieErrors.ts"
import { scrubKey } from "./KieHttp.ts"
import { retryRetryable } from "./KieRetry.ts"
import {
  clip,
  decodeRecordData,
  isTerminal,
  type TaskState,
  type TaskSucceeded,
  type TerminalTaskState
} from "./KieSchema.ts"

/** Polling one task: a recordInfo call every KIE_POLL_INTERVAL_MS. */
export const pollPolicy = (interval: Duration.Duration) => Schedule.spaced(interval)

/** One recordInfo call, retried by `kieRetryPolicy` while its error is retryable. */
export const getTask = Effect.fn("Kie.getTask")(function*(taskId: string) {
  const kie = yield* Kie
  return yield* retryRetryable(kie.getTaskOnce(taskId))
})

/** A state from a stored callback, if it decodes (a bad one falls back to polling). */
const storedState = (taskId: string, data: unknown): TerminalTaskState | undefined => {
  const decoded = decodeRecordData("recordInfo", taskId, data)
  return Result.isSuccess(decoded) && isTerminal(decoded.success) ? decoded.success : undefined
}

/**
 * Finishes when a callback settles the task: a trusted one is believed, an
 * untrusted one (a hint) makes us ask recordInfo. Never fails; storage
 * errors leave the work to polling.
 */
const viaCallbacks = (taskId: string): Effect.Effect<TerminalTaskState, never, Kie | KieCallbacks> =>
  Effect.gen(function*() {
    const callbacks = yield* KieCallbacks
    let hintsSeen = 0
    while (true) {
      const settled = yield* Effect.scoped(Effect.gen(function*() {
        const signal = yield* callbacks.nextSignal(taskId)
        const stored = yield* callbacks.lookup(taskId).pipe(
          Effect.catch(() => Effect.succeed(Option.none()))
        )
        if (Option.isSome(stored)) {
          const callback = stored.value
          if (callback.trusted) {
            const state = storedState(taskId, callback.data)
            if (state !== undefined) return state
          } else if (callback.count > hintsSeen) {
            hintsSeen = callback.count
            const checked = yield* getTask(taskId).pipe(Effect.option)
            if (Option.isSome(checked) && isTerminal(checked.value)) return checked.value
          }
        }
        yield* signal
        return undefined
      }))
      if (settled !== undefined) return settled
    }
  })

/** Polls until a final state; transient errors wait for the next round. */
const viaPolling = (
  taskId: string,
  every: Duration.Duration
): Effect.Effect<TerminalTaskState, KieGetTaskError, Kie> =>
  getTask(taskId).pipe(
    Effect.map((state): TaskState | undefined => state),
    Effect.catchIf(
      (error) => error.retryable,
      (error) => Effect.logWarning(`[KIE] polling ${taskId}: ${error.message}`).pipe(Effect.as(undefined))
    ),
    Effect.repeat({
      schedule: pollPolicy(every),
      until: (state) => state !== undefined && isTerminal(state)
    }),
    Effect.map((state) => state as TerminalTaskState)
  )

/** Waits until the task succeeds (polling and callbacks), within GENERATION_TIMEOUT_MS. */
export const awaitResult: (
  taskId: string
) => Effect.Effect<TaskSucceeded, KieAwaitError, Kie | KieCallbacks | AppConfig> = Effect.fn("Kie.awaitResult")(
  function*(taskId: string) {
    const config = yield* AppConfig
    const timeout = config.generationTimeout
    const final = yield* Effect.raceFirst(viaPolling(taskId, config.kiePollInterval), viaCallbacks(taskId)).pipe(
      Effect.timeoutOrElse({
        duration: timeout,
        orElse: () =>
          Effect.fail(
            new KieGenerationTimeout({
              taskId,
              timeoutMillis: Duration.toMillis(timeout),
              message: `Kie task ${taskId} did not finish within ${Duration.format(timeout)}`
            })
          )
      })
    )
    if (final._tag === "Fail") {
      const scrub = scrubKey(Redacted.value(config.kieApiKey))
      return yield* new KieTaskFailed({
        taskId,
        failCode: final.failCode,
        failMsg: final.failMsg,
        message: scrub(`Kie task ${taskId} failed: ${final.failCode} ${clip(final.failMsg, 200)}`.trim())
      })
    }
    return final
  }
)
