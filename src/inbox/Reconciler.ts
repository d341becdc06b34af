/**
 * The orphan reconciler (ACTIVE only): a pass every RECONCILE_INTERVAL_MS,
 * the first one as soon as leadership starts.
 *
 * - Updates left `processing` by another term (a dead or deposed leader that
 *   did not hand them back itself, `dispatch/Drain.ts`) for longer than
 *   STUCK_UPDATE_THRESHOLD_MS go back to `pending`; the chat's
 *   later updates were held back meanwhile, so order survives the failover.
 *   Once this term is DEPOSED_TERM_GRACE old, rows another term claimed
 *   before this one began go back at once, threshold or not: that leader lost
 *   the lock before this term took it and has stopped its handlers by then, so
 *   after a crash a chat waits about 15 s, not the 90 s threshold.
 * - `pending` updates older than ORPHAN_UPDATE_THRESHOLD_MS are logged as
 *   orphans, each once per term, and the dispatcher is woken for them.
 * - Finished updates older than INBOX_RETENTION_HOURS are deleted in batches.
 *
 * All time comes from `Clock` (`DateTime.now`, UTC), so tests drive it with
 * `TestClock`. Ages go through `UtcTime`: a naive timestamp is UTC, an age is
 * never negative or NaN.
 */
import { DateTime, Duration, Effect, Layer, Option, Schedule } from "effect"
import type { SqlError } from "effect/sql/SqlError"
import { AppConfig } from "../platform/AppConfig.ts"
import { Inbox } from "./Inbox.ts"
import type { StuckReason } from "./sql/stuck.ts"
import { LeaderTerm } from "../leadership/LeaderTerm.ts"
import { repeatLogged } from "../platform/Supervised.ts"
import * as UtcTime from "../platform/UtcTime.ts"

/**
 * How old a term must be before it takes back every row claimed before it
 * began: the fallback for a deposed leader that is alive but did not hand
 * its rows back itself (it could not reach the database, or it froze). A
 * deposed leader stops its leader-only fibers within about 8 s of losing
 * the lock (heartbeat every 1 s, a 2 s query timeout, a 5 s bound on
 * stopping: see `leadership/LeaderLock.ts`); this leaves room beyond that.
 * A process frozen longer than this (SIGSTOP, a stalled VM) could still
 * send a reply twice; its database writes are fenced by `claimed_by` either
 * way.
 */
export const DEPOSED_TERM_GRACE = Duration.seconds(15)

/**
 * After the first pass of a term, this many rechecks (taking back only, no
 * orphan check or purge) one `takeoverRecheckInterval` apart, besides the
 * regular passes.
 */
export const takeoverRechecks = 3
/** The spacing of the takeover rechecks. */
export const takeoverRecheckInterval = Duration.seconds(1)

/** Rows handled per kind per pass; a larger backlog takes several passes. */
export const RECONCILE_BATCH = 500
/** Finished rows deleted per pass. */
export const PURGE_BATCH = 1000

/** A pending update nobody dispatched for longer than ORPHAN_UPDATE_THRESHOLD_MS. */
export interface Orphan {
  readonly updateId: number
  readonly chatId: number | null
  /** Whole seconds since it was received; 0 for a timestamp in the future. */
  readonly ageSeconds: number
}

/** A row taken back from the term that held it. */
export interface Requeued {
  readonly updateId: number
  readonly claimedBy: string | null
  /** Whole seconds since it was claimed; `None` when the claim time was missing. */
  readonly stuckSeconds: Option.Option<number>
  /** Why: its claim's age, its term's instance gone, or an earlier term of this instance (`sql/stuck.ts`). */
  readonly reason: StuckReason
}

/** What one pass did. */
export interface PassReport {
  readonly requeued: ReadonlyArray<Requeued>
  /** Orphans seen for the first time in this term (each is logged once). */
  readonly newOrphans: ReadonlyArray<Orphan>
  readonly purged: number
}

const ageSeconds = (now: DateTime.Utc, at: Option.Option<DateTime.Utc>): Option.Option<number> =>
  Option.map(at, (then) => UtcTime.toSeconds(UtcTime.age(now, then)))

const describeRequeued = (row: Requeued): string => {
  const since = Option.match(row.stuckSeconds, { onNone: () => "an unknown time", onSome: (s) => `${s} s` })
  switch (row.reason) {
    case "gone":
      return `[RECONCILE] update ${row.updateId} was in processing for ${since} under ${row.claimedBy}, whose ` +
        "instance has no database connection left (gone): back to pending at once"
    case "own":
      return `[RECONCILE] update ${row.updateId} was in processing for ${since} under ${row.claimedBy}, an ` +
        "earlier term of this instance (stopped): back to pending at once"
    case "age":
      return `[RECONCILE] update ${row.updateId} was stuck in processing for ${since} (claimed by ${
        row.claimedBy ?? "nobody"
      }): back to pending`
  }
}

/**
 * One reconciler with its memory of logged orphans; `pass` runs one pass,
 * `recheck` only takes back what is due.
 * Exposed so tests can run passes directly.
 */
export const make = Effect.gen(function*() {
  const config = yield* AppConfig
  const inbox = yield* Inbox
  const term = (yield* LeaderTerm).id
  const termStart = yield* DateTime.now
  const loggedOrphans = new Set<number>()

  /** Rows of other terms claimed before this are taken back. */
  const stuckCutoff = (now: DateTime.Utc): DateTime.Utc => {
    const byThreshold = DateTime.subtractDuration(now, config.stuckUpdateThreshold)
    const termOldEnough = Duration.isGreaterThanOrEqualTo(UtcTime.age(now, termStart), DEPOSED_TERM_GRACE)
    return termOldEnough && DateTime.isGreaterThan(termStart, byThreshold) ? termStart : byThreshold
  }

  /** Takes back the rows of other terms that are due (`stuckCutoff`, or their instance gone); logs each. */
  const takeBack = (now: DateTime.Utc) =>
    Effect.gen(function*() {
      const stuck = yield* inbox.requeueStuck(term, stuckCutoff(now), RECONCILE_BATCH)
      const requeued = stuck.map((row): Requeued => ({
        updateId: row.updateId,
        claimedBy: row.claimedBy,
        stuckSeconds: ageSeconds(now, row.claimedAt),
        reason: row.reason
      }))
      for (const row of requeued) {
        // Reported here; the orphan check would only report it again.
        loggedOrphans.add(row.updateId)
        yield* Effect.logWarning(describeRequeued(row))
      }
      return requeued
    })

  /** A takeover recheck: only the taking back, and a wake when something came back. */
  const recheck: Effect.Effect<ReadonlyArray<Requeued>, SqlError> = Effect.gen(function*() {
    const requeued = yield* takeBack(yield* DateTime.now)
    if (requeued.length > 0) yield* inbox.wake
    return requeued
  }).pipe(Effect.withSpan("Reconciler.recheck"))

  const pass: Effect.Effect<PassReport, SqlError> = Effect.gen(function*() {
    const now = yield* DateTime.now
    const requeued = yield* takeBack(now)

    const pending = yield* inbox.pendingReceivedBefore(
      DateTime.subtractDuration(now, config.orphanUpdateThreshold),
      RECONCILE_BATCH
    )
    const newOrphans: Array<Orphan> = []
    for (const row of pending) {
      if (loggedOrphans.has(row.updateId)) continue
      loggedOrphans.add(row.updateId)
      const orphan = {
        updateId: row.updateId,
        chatId: row.chatId,
        ageSeconds: Option.getOrElse(ageSeconds(now, row.receivedAt), () => 0)
      }
      newOrphans.push(orphan)
      yield* Effect.logWarning(
        `[RECONCILE] orphan update ${orphan.updateId} (chat ${
          orphan.chatId ?? "none"
        }) pending for ${orphan.ageSeconds} s: dispatching`
      )
    }
    // Forget ids that are no longer orphans, so the memory stays as small as the backlog.
    if (pending.length < RECONCILE_BATCH) {
      const still = new Set(pending.map((row) => row.updateId))
      for (const id of loggedOrphans) if (!still.has(id)) loggedOrphans.delete(id)
    }

    if (requeued.length > 0 || newOrphans.length > 0) yield* inbox.wake

    const purged = yield* inbox.purgeFinished(
      DateTime.subtractDuration(now, config.inboxRetention),
      PURGE_BATCH
    )
    if (purged > 0) yield* Effect.logInfo(`[RECONCILE] deleted ${purged} finished update(s) past retention`)
    yield* Effect.logDebug(
      `[RECONCILE] pass done: ${requeued.length} requeued, ${newOrphans.length} new orphan(s), ${purged} purged`
    )
    return { requeued, newOrphans, purged }
  }).pipe(Effect.withSpan("Reconciler.pass"))

  return { pass, recheck }
})

/**
 * The reconciler of one leadership term: a pass now, then every
 * RECONCILE_INTERVAL_MS, plus `takeoverRechecks` rechecks soon after the first.
 */
export const layer: Layer.Layer<never, never, AppConfig | Inbox | LeaderTerm> = Layer.effectDiscard(
  Effect.gen(function*() {
    const config = yield* AppConfig
    const reconciler = yield* make
    yield* repeatLogged(reconciler.pass, Schedule.spaced(config.reconcileInterval), {
      failing: (error) => `[RECONCILE] pass failed, trying again next interval: ${error.message}`,
      recovered: "[RECONCILE] passes work again"
    }).pipe(Effect.forkScoped)
    yield* Effect.sleep(takeoverRecheckInterval).pipe(
      Effect.andThen(Effect.ignore(reconciler.recheck)),
      Effect.repeat({ times: takeoverRechecks - 1 }),
      Effect.forkScoped
    )
  })
)
