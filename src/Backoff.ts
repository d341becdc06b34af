/**
 * The retry policies the services share. Every retry loop here backs off
 * exponentially, caps the delay, and jitters it so that instances (and fibers)
 * do not retry in lockstep.
 */
import { type Duration, Schedule } from "effect"

/** Exponential from `first`, each delay at most `cap`, jittered. Unbounded in count: bound it where needed. */
export const cappedExponential = (first: Duration.Input, cap: Duration.Input) =>
  Schedule.min([Schedule.exponential(first), Schedule.spaced(cap)]).pipe(Schedule.jittered)

/** Recording a state change through a database blip: 100 ms doubling to 5 s, about two minutes in all. */
export const bookkeepingRetry = cappedExponential("100 millis", "5 seconds").pipe(Schedule.upTo({ times: 30 }))

/** Re-LISTEN after the notification connection failed: quick at first, then every 10 s. */
export const listenRetry = cappedExponential("500 millis", "10 seconds")
