/**
 * The retry vocabulary of the whole service.
 *
 * Every retry or repeat schedule is a named `*Policy` built here: a capped,
 * jittered exponential backoff (`backoff`), bounded in count where the caller
 * must give up at some point (`Schedule.upTo`). Jitter keeps instances and
 * fibers from retrying in lockstep; the cap keeps a long outage from growing
 * the wait without bound.
 *
 * The loops that use these policies and report "failing / working again"
 * once per outage are built with `Supervised.ts`.
 */
import { type Duration, Schedule } from "effect"

/**
 * Exponential from `first`, each delay at most `cap`, jittered. Unbounded in
 * count: bound it with `Schedule.upTo({ times })` where the caller gives up.
 */
export const backoff = (first: Duration.Input, cap: Duration.Input) =>
  Schedule.min([Schedule.exponential(first), Schedule.spaced(cap)]).pipe(Schedule.jittered)

/** Recording a state change through a database blip: 100 ms doubling to 5 s, about two minutes in all. */
export const bookkeepingPolicy = backoff("100 millis", "5 seconds").pipe(Schedule.upTo({ times: 30 }))

/**
 * Re-LISTEN after a notification connection failed: quick at first, then
 * every 10 s. Every listener uses this one policy (a sweep or a poll covers
 * for the lost notifications meanwhile).
 */
export const listenPolicy = backoff("500 millis", "10 seconds")
