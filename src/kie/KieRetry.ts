/**
 * The retry decision for a createTask: an error is retried only if it says
 * so (`retryable`: trying again may succeed and cannot bill a second task),
 * by `kieRetryPolicy`. Anything else (a caller's own error, a createTask that
 * may have created a task) ends the call at once. recordInfo is not retried
 * here: its caller polls again on its own schedule.
 */
import { Effect, Schedule } from "effect"
import { backoff } from "../platform/Retry.ts"
import { isKieError } from "./KieErrors.ts"

/**
 * Retries of one Kie request: exponential from 1 s (1, 2, 4 s), each delay
 * jittered by ±20 % so instances do not retry in lockstep, at most 3 retries.
 * Applied only to errors whose `retryable` is true.
 */
export const kieRetryPolicy = backoff("1 second", "4 seconds").pipe(Schedule.upTo({ times: 3 }))

/** Whether `error` is a Kie error that may be retried. */
export const isRetryable = (error: unknown): boolean => isKieError(error) && error.retryable

/** `request` retried by `kieRetryPolicy` while it fails with a retryable Kie error. */
export const retryRetryable = <A, E, R>(request: Effect.Effect<A, E, R>): Effect.Effect<A, E, R> =>
  Effect.retry(request, { schedule: kieRetryPolicy, while: isRetryable })
