/**
 * In-process lock holders for LeaderLock tests: each is the real
 * `LeaderLock.layer` (with its own config, Health and log capture) built in a
 * scope the test closes, on the test file's database.
 *
 * Time: the controller sleeps on the TestClock. Database round trips are real,
 * so the helpers advance the clock one second at a time and, after each step,
 * wait (with a bounded live timeout) until every holder is back in a waiting
 * phase, i.e. its real I/O for that step has finished.
 */
import type { PgClient } from "@effect/sql-pg"
import { Context, Duration, Effect, Exit, Layer, Logger, Scope, Stream, SubscriptionRef } from "effect"
import { SqlClient } from "effect/sql/SqlClient"
import { TestClock } from "effect/testing"
import { Health } from "../../src/observability/Health.ts"
import * as LeaderLock from "../../src/leadership/LeaderLock.ts"
import { makeLogger } from "../../src/platform/Logging.ts"
import { TestConfigLive } from "./TestConfig.ts"

export interface Holder {
  readonly name: string
  readonly scope: Scope.Closeable
  readonly leader: Context.Service.Shape<typeof LeaderLock.LeaderState>
  readonly health: Context.Service.Shape<typeof Health>
  /** Log messages written so far, in order. */
  readonly messages: () => ReadonlyArray<string>
}

export interface HolderOptions<E, R> {
  readonly env?: Record<string, string>
  readonly leaderOnly?: Layer.Layer<never, E, R>
  /** Called synchronously with every message this holder logs. */
  readonly onMessage?: (message: string) => void
  /** A different pool (e.g. through a proxy) for this holder's lock session. */
  readonly pg?: Layer.Layer<PgClient.PgClient | SqlClient, unknown>
}

const messageOf = (line: string): string => {
  const message = JSON.parse(line).message
  return typeof message === "string" ? message : JSON.stringify(message)
}

/** Waits, with a live timeout, until `ref` holds a value satisfying `predicate`. */
export const waitFor = <A>(
  ref: SubscriptionRef.SubscriptionRef<A>,
  predicate: (a: A) => boolean,
  what: string,
  within: Duration.Input = "10 seconds"
) =>
  SubscriptionRef.changes(ref).pipe(
    Stream.filter(predicate),
    Stream.runHead,
    Effect.timeoutOrElse({
      duration: within,
      orElse: () => Effect.die(new Error(`timed out waiting for ${what}`))
    }),
    TestClock.withLive,
    Effect.asVoid
  )

/**
 * Waits until the holder's controller is sleeping or waiting, not mid round
 * trip. A PASSIVE holder is idle only once its lock session's backend is
 * queued for the lock in PostgreSQL: before that its wait is on its way, and
 * after the holder's release or loss the grant may be on its way back.
 */
export const settled = (holder: Holder) =>
  Effect.gen(function*() {
    const sql = yield* SqlClient
    // Still shown waiting on 'Lock' but already granted (pg_locks) means the
    // grant is on its way: PostgreSQL grants at the unlock, and the waiting
    // backend shows it only once it runs again, which on a loaded machine can
    // take longer than a few clock ticks.
    const queued = sql<{ queued: boolean }>`SELECT EXISTS (SELECT 1 FROM pg_stat_activity a
      WHERE a.application_name = ${`zimage-bot leader ${holder.name}`} AND a.wait_event_type = 'Lock'
        AND NOT EXISTS (SELECT 1 FROM pg_locks l WHERE l.pid = a.pid AND l.locktype = 'advisory' AND l.granted)
    ) AS queued`
    // Polled every 5 ms of real time, for at most 10 s.
    for (let poll = 0; poll < 2000; poll++) {
      yield* waitFor(
        holder.leader.status,
        (s) => LeaderLock.waitingPhases.has(s.phase),
        `${holder.name} to settle (phase ${SubscriptionRef.getUnsafe(holder.leader.status).phase})`
      )
      if (SubscriptionRef.getUnsafe(holder.leader.status).phase !== "passive") return
      if ((yield* queued)[0]!.queued) return
      yield* TestClock.withLive(Effect.sleep("5 millis"))
    }
    return yield* Effect.die(new Error(`timed out waiting for ${holder.name}'s lock wait to settle`))
  })

/**
 * Waits until the holder has no heartbeat in flight. For a holder stuck
 * stepping down (never back in a waiting phase) whose lock session is still
 * checked every second: without this, two ticks could pass during one slow
 * real round trip and time the heartbeat out on virtual time alone.
 */
export const heartbeatSettled = (holder: Holder) =>
  waitFor(holder.leader.status, (s) => !s.heartbeatInFlight, `${holder.name}'s heartbeat to finish`)

/** Advances the clock one second at a time, letting every holder finish its I/O after each step. */
export const tick = (holders: ReadonlyArray<Holder>, seconds = 1) =>
  Effect.gen(function*() {
    for (let i = 0; i < seconds; i++) {
      yield* TestClock.adjust(Duration.seconds(1))
      for (const holder of holders) yield* settled(holder)
    }
  })

/** Ticks until `done` holds, at most `maxSeconds` times; returns the number of ticks taken. */
export const tickUntil = (
  holders: ReadonlyArray<Holder>,
  done: () => boolean,
  maxSeconds: number,
  what: string
) =>
  Effect.gen(function*() {
    for (let i = 0; i <= maxSeconds; i++) {
      if (done()) return i
      if (i < maxSeconds) yield* tick(holders)
    }
    return yield* Effect.die(new Error(`${what} did not happen within ${maxSeconds} virtual seconds`))
  })

export const isActive = (holder: Holder) => SubscriptionRef.getUnsafe(holder.leader.active)

/**
 * Builds a holder named `name` (its INSTANCE_ID, so its lock session's
 * application_name is "zimage-bot leader <name>") and waits for the outcome
 * of its first attempt.
 */
export const startHolder = <E = never, R = never>(name: string, options: HolderOptions<E, R> = {}) =>
  Effect.gen(function*() {
    const lines: Array<string> = []
    const logger = makeLogger({
      format: "json",
      secrets: [],
      write: (line) => {
        lines.push(line)
        options.onMessage?.(messageOf(line))
      }
    })
    const leaderOnly: Layer.Layer<never, E, R> = options.leaderOnly ?? Layer.empty
    const live = LeaderLock.layer(leaderOnly).pipe(
      Layer.provideMerge(Health.layer),
      Layer.provide(TestConfigLive({ INSTANCE_ID: name, LOG_LEVEL: "info", ...options.env })),
      Layer.provide(Logger.layer([logger])),
      Layer.provide(Layer.orDie(options.pg ?? Layer.empty))
    )
    const scope = yield* Scope.make()
    // Closed with the test at the latest, so a failed test leaves no holder behind.
    yield* Effect.addFinalizer(() => Scope.close(scope, Exit.void))
    const context = yield* Layer.buildWithScope(live, scope)
    const holder: Holder = {
      name,
      scope,
      leader: Context.get(context, LeaderLock.LeaderState),
      health: Context.get(context, Health),
      messages: () => lines.map(messageOf)
    }
    yield* waitFor(
      holder.leader.status,
      (s) => s.phase === "passive" || s.phase === "active" || s.phase === "backoff",
      `${name}'s first attempt`
    )
    return holder
  })
