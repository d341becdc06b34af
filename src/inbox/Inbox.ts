/**
 * The durable inbox of Telegram updates (`telegram_updates`): every update is
 * committed here before Telegram is told it arrived, and leaves only as
 * `done` or `dead`. All of the table's SQL lives in `sql/`, one file per
 * operation; this service is the only one that runs it.
 *
 * Life of a row:
 *
 * | from         | event                                          | to           |
 * | ------------ | ---------------------------------------------- | ------------ |
 * | (none)       | `store` (a duplicate `update_id` is ignored)   | `pending`    |
 * | (none)       | `store`, claimed on storing (`claimHereOnStore`)| `processing` |
 * | `pending`    | `claim` by a term (attempts + 1)               | `processing` |
 * | `processing` | `complete`                                     | `done`       |
 * | `processing` | `markDead` (attempts exhausted / undecodable)  | `dead`       |
 * | `processing` | `recordFailure`, `beginAttempt` (a retry)      | `processing` |
 * | `processing` | `release` (its term stopped: shutdown, loss)   | `pending`    |
 * | `processing` | a store that claimed it failed (hand-back)     | `pending`    |
 * | `processing` | `requeueStuck` (its term's leader is gone)     | `pending`    |
 * | `done`/`dead`| `purgeFinished` (past retention)               | (deleted)    |
 *
 * `claimed_by` names the leadership term that claimed a row. A pending row is
 * claimable only while no row of its chat is `processing` under another term,
 * so a chat's order survives failover: its later updates wait until the
 * reconciler hands the dead leader's row back. Every write after a claim is
 * guarded by `claimed_by`, so a deposed leader cannot overwrite a row another
 * term owns now.
 *
 * A store NOTIFYs `telegram_updates` right after its row is committed, which
 * wakes the dispatcher on whichever instance is ACTIVE. The NOTIFYs are
 * coalesced, never sent from the INSERT's own transaction: PostgreSQL takes
 * one database-wide lock to commit a transaction that notified, so a NOTIFY
 * per webhook made every webhook's commit wait in one line (measured: the
 * inbox's INSERT with NOTIFY reached 37 % of the same INSERT's rate without).
 * At most one NOTIFY is in flight and one more waits, so a burst of stores
 * costs two, and NOTIFYs are at least `ANNOUNCE_SPACING_MS` apart, so steady
 * load costs at most 200 a second however many stores commit. A lost NOTIFY
 * costs latency, never an update: the dispatcher also sweeps every few
 * seconds.
 *
 * On the ACTIVE instance its dispatcher takes the instance's own stores
 * directly (`claimHereOnStore`): while it has room, the INSERT itself claims
 * each chat's first update of the batch for its term (when nothing of that
 * chat is unfinished) and hands the rows over in memory, so those updates
 * need no claim statement, no second write of the row and no wake-up. What
 * the INSERT left `pending` wakes that dispatcher in memory: no NOTIFY at
 * all on the ACTIVE instance.
 *
 * Stores are group-committed (`StoreWriter.ts`): concurrent webhooks share
 * one INSERT and one commit, and each caller still hears only once its own
 * rows are committed.
 */
import {
  Cause,
  Clock,
  Context,
  DateTime,
  Deferred,
  Effect,
  Exit,
  Layer,
  Metric,
  Option,
  Queue,
  Schema,
  Scope,
  type Tracer
} from "effect"
import { SqlClient } from "effect/sql/SqlClient"
import type { SqlError } from "effect/sql/SqlError"
import * as Metrics from "../observability/Metrics.ts"
import { AppConfig } from "../platform/AppConfig.ts"
import { plainSpans } from "../platform/PlainSpans.ts"
import { plainTimer } from "../platform/PlainTimer.ts"
import { bookkeepingPolicy } from "../platform/Retry.ts"
import { makeProblemLog } from "../platform/ProblemLog.ts"
import { makeFloodGate } from "./FloodGate.ts"
import type { Routing, UpdateEnvelope } from "../telegram/TelegramUpdate.ts"
import { registerInboxHealth } from "./InboxHealth.ts"
import { claim, type ClaimedUpdate, CLAIMS_PER_CHAT } from "./sql/claim.ts"
import { type InboxStats, stats } from "./sql/counts.ts"
import { complete, markDead } from "./sql/finish.ts"
import { notify } from "./sql/notify.ts"
import { pendingReceivedBefore, type PendingUpdate } from "./sql/orphans.ts"
import { release, releaseClaimed } from "./sql/release.ts"
import { purgeFinished } from "./sql/retention.ts"
import { beginAttempt, recordFailure } from "./sql/retry.ts"
import { type RoutedUpdate, type StoredAndClaimed, storeClaimingUpdates, storeRoutedUpdates } from "./sql/store.ts"
import { requeueStuck, type StuckUpdate } from "./sql/stuck.ts"
import { describeStoreFailure, makeStoreWriter, storeTimeout } from "./StoreWriter.ts"

export { CHANNEL } from "./sql/notify.ts"
export { migration, migrationClaimReads, migrationPendingChat, migrationUnfinishedChat } from "./sql/migrate.ts"
export { CLAIMS_PER_CHAT, type ClaimedUpdate } from "./sql/claim.ts"
export type { InboxStats } from "./sql/counts.ts"
export type { PendingUpdate } from "./sql/orphans.ts"
export type { StuckUpdate } from "./sql/stuck.ts"

/** A store that did not commit: Telegram is answered 503 and sends the update again. */
export class InboxUnavailable extends Schema.TaggedError<InboxUnavailable>()("InboxUnavailable", {
  message: Schema.String
}) {}

/**
 * The ACTIVE instance's dispatcher as the inbox's stores see it
 * (`claimHereOnStore`). Its callbacks run on the store's writer: they must be
 * quick.
 */
export interface StoreClaims {
  /** Its leadership term: the owner a claim on storing writes. */
  readonly term: string
  /** How many more updates it takes now (0: none). */
  readonly room: () => number
  /** Whether it takes an update like this one at all (e.g. a kind it handles). */
  readonly wants: (routing: Routing) => boolean
  /** Takes rows just claimed for its term on storing, in `update_id` order. */
  readonly take: (claimed: ReadonlyArray<ClaimedUpdate>) => Effect.Effect<void>
  /** Wakes its claim loop: something was stored `pending`. */
  readonly wake: () => void
}

/** The inbox's operations, one per statement in `sql/`. */
export interface InboxShape {
  /**
   * Stores a batch (duplicates ignored), in one statement shared with the
   * stores queued beside it (group commit), and, when anything new was
   * stored, announces it (a coalesced NOTIFY after the commit). Returns, once
   * the rows are committed, how many of these updates were new. Updates over
   * a chat's or user's rate (`FloodGate.ts`) are left out and counted, not
   * stored: they are acknowledged all the same. Fails only
   * with `InboxUnavailable` (database down, not migrated, shutting down, no
   * commit within 5 s, …).
   */
  readonly store: (updates: ReadonlyArray<UpdateEnvelope>) => Effect.Effect<number, InboxUnavailable>
  /**
   * `store` of one update with no fiber and no Effect, for the webhook's
   * direct route (its one hot path): the same flood gate, group commit,
   * logging, metrics and bound of 5 s, and the same `Inbox.store` span (under
   * `parent`). `done` is called exactly once, on the store's writer or a
   * timer, with how many were new (0 or 1) or `InboxUnavailable`; it must be
   * quick and must not throw.
   */
  readonly storeUnsafe: (
    update: UpdateEnvelope,
    done: (exit: Exit.Exit<number, InboxUnavailable>) => void,
    parent?: Tracer.AnySpan
  ) => void
  /**
   * Claims up to `limit` pending updates in `update_id` order for `term`,
   * skipping chats with an update still `processing` under another term and
   * holding at most `perChat` (default `CLAIMS_PER_CHAT`) rows of a chat in
   * `processing`, so one chat's backlog cannot crowd out the others. Returns
   * only once every store that claimed on storing and was under way has
   * handed its rows over (`claimHereOnStore`): a claim may take a chat's
   * later row because its earlier one is `processing` under the same term,
   * and the earlier one must reach the dispatcher first.
   */
  readonly claim: (
    term: string,
    limit: number,
    perChat?: number
  ) => Effect.Effect<ReadonlyArray<ClaimedUpdate>, SqlError>
  /** Marks finished (`done`) updates this term owns; returns how many it still owned. */
  readonly complete: (term: string, updateIds: ReadonlyArray<number>) => Effect.Effect<number, SqlError>
  /**
   * Marks finished (`done`) the updates this term owns and, in the same
   * transaction, runs `alongside` with the ids it still owned (e.g. the
   * chat's new state): both commit or neither does, and a deposed term
   * writes neither. Without `alongside`, one statement and no transaction
   * block. Returns the ids it still owned.
   */
  readonly completeWith: (
    term: string,
    updateIds: ReadonlyArray<number>,
    alongside?: (owned: ReadonlySet<number>) => Effect.Effect<void, SqlError>
  ) => Effect.Effect<ReadonlySet<number>, SqlError>
  /** Records a failed attempt's error; the row stays `processing`. */
  readonly recordFailure: (term: string, updateId: number, error: string) => Effect.Effect<boolean, SqlError>
  /** Counts the start of another attempt (after a backoff). */
  readonly beginAttempt: (term: string, updateId: number) => Effect.Effect<boolean, SqlError>
  /** Marks an update this term owns `dead` with its error; tells whether the term still owned it. */
  readonly markDead: (term: string, updateId: number, error: string) => Effect.Effect<boolean, SqlError>
  /**
   * Hands every row still `processing` under this term back to `pending`
   * (a graceful shutdown, or a lost leadership, after the term's fibers
   * stopped: `dispatch/Drain.ts`). Rows not in
   * `started` get their claim's attempt back: they were claimed, never run.
   */
  readonly release: (term: string, started: ReadonlyArray<number>) => Effect.Effect<number, SqlError>
  /**
   * Returns to `pending` the rows `processing` under any other term whose
   * claim is older than `claimedBefore`, or whose term is over for sure (its
   * instance has no connection left, or it is an earlier term of this one):
   * `sql/stuck.ts`.
   */
  readonly requeueStuck: (
    term: string,
    claimedBefore: DateTime.Utc,
    limit: number
  ) => Effect.Effect<ReadonlyArray<StuckUpdate>, SqlError>
  /** Pending rows received before `receivedBefore`, oldest first. */
  readonly pendingReceivedBefore: (
    receivedBefore: DateTime.Utc,
    limit: number
  ) => Effect.Effect<ReadonlyArray<PendingUpdate>, SqlError>
  /** Deletes up to `limit` finished rows processed before `before`. */
  readonly purgeFinished: (before: DateTime.Utc, limit: number) => Effect.Effect<number, SqlError>
  /** The table's counts for `/health` and `/metrics`. */
  readonly stats: Effect.Effect<InboxStats, SqlError>
  /** NOTIFYs the channel: wakes the dispatcher (e.g. after a requeue). */
  readonly wake: Effect.Effect<void, SqlError>
  /**
   * While the scope lasts, this instance's stores go to `claims` (the
   * dispatcher of this instance's leadership term): the INSERT claims for
   * its term, up to its `room`, each chat's earliest update of the batch
   * when nothing of that chat is `pending` or `processing`, and `take` gets
   * those rows once they are committed; if anything was stored `pending`,
   * `wake` is called instead of a NOTIFY (only the ACTIVE instance claims, and
   * a NOTIFY costs the database a transaction per LISTEN connection). Rows
   * claimed that nobody takes go back to `pending` (and are announced): those
   * of a statement that failed (had it committed them), and those of a
   * statement that committed after the scope closed (its term stopping, which
   * does not wait for the writer). Without a registration (a PASSIVE
   * instance), stores are `pending` and NOTIFY as before.
   */
  readonly claimHereOnStore: (claims: StoreClaims) => Effect.Effect<void, never, Scope.Scope>
}

/**
 * The pause after each NOTIFY before the next one. Under load a store
 * commits every millisecond or so, and a NOTIFY per commit doubled the
 * database's transactions (each NOTIFY takes an XID and a durable commit).
 * With the pause a burst costs at most one NOTIFY per 5 ms; a store is still
 * announced at most 5 ms after the previous NOTIFY, and one after a quiet
 * spell at once.
 */
export const ANNOUNCE_SPACING_MS = 5

/**
 * Waits `ms` of real time, not the `Clock`'s: it paces database round trips,
 * which take real time, and tests on the `TestClock` must not stall on it.
 */
const pause = (ms: number): Effect.Effect<void> =>
  Effect.callback<void>((resume) => {
    const timer = setTimeout(() => resume(Effect.void), ms)
    return Effect.sync(() => clearTimeout(timer))
  })

/**
 * The coalesced announcer (see the module doc): at most one NOTIFY in flight
 * (or in its pause, `ANNOUNCE_SPACING_MS`) and one more waiting; a full slot
 * drops the offer. A failed or slow NOTIFY is left to the dispatcher's sweep.
 */
export const makeAnnouncer = (
  notifyOnce: Effect.Effect<void, SqlError>
): Effect.Effect<Effect.Effect<void>, never, Scope.Scope> =>
  Effect.gen(function*() {
    const announcements = yield* Queue.dropping<void>(1)
    yield* Queue.take(announcements).pipe(
      Effect.andThen(notifyOnce.pipe(Effect.timeout("5 seconds"), Effect.ignore)),
      Effect.andThen(pause(ANNOUNCE_SPACING_MS)),
      Effect.forever,
      Effect.forkScoped
    )
    return Queue.offer(announcements, undefined).pipe(Effect.asVoid)
  })

const droppedAsFlood = Metrics.seriesOf(Metrics.updatesDropped, { reason: "flood" })

const make = Effect.gen(function*() {
  const sql = yield* SqlClient
  const scope = yield* Scope.Scope
  // Once per change, not once per request: Telegram retries a lot during an outage.
  const storeProblems = makeProblemLog()
  const wake = notify(sql)
  const announce = yield* makeAnnouncer(wake)
  /** This instance's dispatcher, while it runs (`claimHereOnStore`). */
  let claimsHere: StoreClaims | undefined
  /** Wakes this instance's dispatcher, or (none here) announces the rows to whichever is ACTIVE. */
  const announcePending = Effect.suspend(() => {
    if (claimsHere === undefined) return announce
    claimsHere.wake()
    return Effect.void
  })
  const claimHereOnStore = (claims: StoreClaims) =>
    Effect.acquireRelease(
      Effect.sync(() => void (claimsHere = claims)),
      () =>
        Effect.sync(() => {
          if (claimsHere === claims) claimsHere = undefined
        })
    )

  /** The rows a claim on storing is offered: each chat's earliest of the batch, if `claims` wants it, up to its room. */
  const offeredTo = (claims: StoreClaims, updates: ReadonlyArray<RoutedUpdate>): Set<number> => {
    const earliest = new Map<number, RoutedUpdate>()
    const chatless: Array<RoutedUpdate> = []
    for (const update of updates) {
      const chatId = update.routing.chatId
      if (chatId === null) chatless.push(update)
      else if ((earliest.get(chatId)?.update_id ?? Infinity) > update.update_id) earliest.set(chatId, update)
    }
    const offered = new Set<number>()
    let room = claims.room()
    for (const update of [...earliest.values(), ...chatless]) {
      if (room <= 0) break
      if (!claims.wants(update.routing)) continue
      offered.add(update.update_id)
      room--
    }
    return offered
  }

  /** Stores that claim on storing, from their statement's start until their rows are handed over. */
  const claimingStores = new Set<Deferred.Deferred<void>>()

  /** One statement of the group commit: claims for this instance's dispatcher when it has room. */
  const insert = (updates: ReadonlyArray<RoutedUpdate>): Effect.Effect<ReadonlySet<number>, SqlError> =>
    Effect.suspend(() => {
      const claims = claimsHere
      const offered = claims === undefined ? undefined : offeredTo(claims, updates)
      if (claims === undefined || offered === undefined || offered.size === 0) {
        return Effect.tap(storeRoutedUpdates(sql, updates), (fresh) => fresh.size > 0 ? announcePending : Effect.void)
      }
      const handedOver = Deferred.makeUnsafe<void>()
      claimingStores.add(handedOver)
      // Only the statement can be interrupted (the writer's timeout): once it committed, its
      // claimed rows are handed over whatever happens, or they would sit `processing` unheard of.
      return Effect.uninterruptibleMask((restore) =>
        restore(storeClaimingUpdates(sql, updates, claims.term, offered)).pipe(
          Effect.onExit((exit) => Exit.isSuccess(exit) ? Effect.void : handBackLater(claims.term, offered)),
          Effect.tap((stored) => handOver(claims, updates, stored)),
          Effect.map(({ fresh }) => fresh)
        )
      ).pipe(
        Effect.ensuring(Effect.sync(() => {
          claimingStores.delete(handedOver)
          Deferred.doneUnsafe(handedOver, Exit.void)
        }))
      )
    })

  /**
   * Waits until the stores claiming on storing that are under way now have
   * handed their rows over. A claim calls it before it returns: it may have
   * seen such a store's committed row (a chat's earlier update, `processing`
   * under the term) and taken the chat's next one, which must not reach the
   * dispatcher first.
   */
  const claimingStoresOver = Effect.suspend(() =>
    claimingStores.size === 0 ? Effect.void : Effect.forEach([...claimingStores], Deferred.await, { discard: true })
  )

  /**
   * After a statement that claimed for `claims` committed: its claimed rows
   * go to `claims`, or back to `pending` if its term ended meanwhile
   * (shutdown, lost leadership); what it stored `pending` is announced.
   */
  const handOver = (claims: StoreClaims, updates: ReadonlyArray<RoutedUpdate>, stored: StoredAndClaimed) => {
    const { claimed, fresh, receivedAt } = stored
    const rows = claimed.size === 0
      ? Effect.void
      : claimsHere === claims
      ? claims.take(claimedRows(updates, claimed, receivedAt))
      : Effect.catchCause(handBackNow(claims.term, claimed), () => handBackLater(claims.term, claimed))
    return fresh.size > claimed.size ? Effect.andThen(rows, announcePending) : rows
  }

  /** The rows claimed on storing, as a claim returns them. */
  const claimedRows = (
    updates: ReadonlyArray<RoutedUpdate>,
    claimed: ReadonlySet<number>,
    receivedAt: Date
  ): ReadonlyArray<ClaimedUpdate> => {
    const at = Option.some(DateTime.fromDateUnsafe(receivedAt))
    return updates
      .filter((update) => claimed.has(update.update_id))
      .sort((a, b) => a.update_id - b.update_id)
      .map((update): ClaimedUpdate => ({
        updateId: update.update_id,
        chatId: update.routing.chatId,
        kind: update.routing.kind,
        payload: update.update,
        attempts: 1,
        receivedAt: at
      }))
  }

  /**
   * Hands rows a store claimed for `term`, and nobody took, back to `pending`
   * (those of `updateIds` still `processing` under it), and announces them
   * to whichever dispatcher runs now. Fails if the database does not answer.
   */
  const handBackNow = (term: string, updateIds: ReadonlySet<number>) =>
    releaseClaimed(sql, term, [...updateIds]).pipe(
      Effect.timeout(storeTimeout),
      Effect.tap((count) =>
        count === 0 ? Effect.void : Effect.andThen(
          Effect.logInfo(`[INBOX] handed ${count} update(s) claimed on storing, which nobody took, back to pending`),
          announcePending
        )
      )
    )

  /**
   * `handBackNow` in the background, retried through blips: after a
   * statement that claimed failed (the database, its timeout, shutdown). By
   * then the statement is over on the server (an interrupted one is drained
   * or cancelled first), whether it committed or not. If the database stays
   * away, the rows stay with the term until its release (which takes back
   * all of its rows) or the next leader's reconciler.
   */
  const handBackLater = (term: string, updateIds: ReadonlySet<number>) =>
    handBackNow(term, updateIds).pipe(
      Effect.retry(bookkeepingPolicy),
      Effect.catchCause(() =>
        Effect.logWarning(
          "[INBOX] updates a failed store may have claimed could not be handed back; they wait for the term's release or the next leader's reconciler"
        )
      ),
      Effect.forkIn(scope),
      Effect.asVoid
    )

  const writer = yield* makeStoreWriter<RoutedUpdate>({ insert })
  const config = yield* AppConfig
  const floodGate = makeFloodGate({ perChat: config.floodChatRate, perUser: config.floodUserRate })

  const admitAndWrite = (updates: ReadonlyArray<UpdateEnvelope>) =>
    Effect.gen(function*() {
      const { admitted, dropped } = floodGate.admit(updates, yield* Clock.currentTimeMillis)
      if (dropped > 0) yield* Metric.update(droppedAsFlood, dropped)
      return admitted.length === 0 ? 0 : yield* writer.write(admitted)
    })

  const recoveredMessage = "[INBOX] storing updates works again"
  /** What a store that did not commit within `storeTimeout` failed with (as `Effect.timeout` says it). */
  const timedOut = Cause.fail(new Cause.TimeoutError())
  /** Logs the failure (once per change) and says what the caller hears. */
  const unavailable = (cause: Cause.Cause<unknown>) =>
    Effect.suspend(() => {
      const reason = describeStoreFailure(cause)
      return storeProblems.failing(`[INBOX] cannot store updates (Telegram will retry): ${reason}`).pipe(
        Effect.as(new InboxUnavailable({ message: `the update could not be stored: ${reason}` }))
      )
    })

  // A span without a stack trace (unlike `Effect.fn`'s): capturing one is measurable CPU on every webhook.
  const store = (updates: ReadonlyArray<UpdateEnvelope>) =>
    admitAndWrite(updates).pipe(
      Effect.timeout(storeTimeout),
      Effect.tap(() => storeProblems.recovered(recoveredMessage)),
      Effect.catchCause((cause) => Effect.flatMap(unavailable(cause), Effect.fail)),
      Effect.withSpan("Inbox.store", undefined, { captureStackTrace: false })
    )

  // `store` for the direct route: the same steps in plain code, Effects only for the rare log lines.
  const context = yield* Effect.context<never>()
  const runLogging = Effect.runForkWith(context)
  const clock = yield* Effect.clockWith(Effect.succeed)
  const spans = yield* plainSpans
  const startTimer = yield* plainTimer
  const storeUnsafe: InboxShape["storeUnsafe"] = (update, done, parent) => {
    const span = spans.start("Inbox.store", { parent })
    const { admitted, dropped } = floodGate.admit([update], clock.currentTimeMillisUnsafe())
    if (dropped > 0) droppedAsFlood.updateUnsafe(dropped, context)
    let settled = false
    const settle = (exit: Exit.Exit<number, InboxUnavailable>) => {
      if (settled) return
      settled = true
      cancelTimer()
      spans.end(span, exit)
      done(exit)
    }
    const cancelTimer = startTimer(
      storeTimeout,
      () => runLogging(Effect.map(unavailable(timedOut), (error) => settle(Exit.fail(error))))
    )
    writer.writeUnsafe(admitted, (exit) => {
      if (settled) return
      if (Exit.isSuccess(exit)) {
        if (storeProblems.reporting()) runLogging(storeProblems.recovered(recoveredMessage))
        return settle(Exit.succeed(exit.value))
      }
      // The failure's log line is written first, then the caller hears it (both right away).
      runLogging(Effect.map(unavailable(exit.cause), (error) => settle(Exit.fail(error))))
    })
  }

  return Inbox.of({
    store,
    storeUnsafe,
    claim: Effect.fn("Inbox.claim")((term: string, limit: number, perChat = CLAIMS_PER_CHAT) =>
      Effect.tap(claim(sql, term, limit, perChat), () => claimingStoresOver)
    ),
    complete: (term, updateIds) => Effect.map(complete(sql, term, updateIds), (owned) => owned.size),
    completeWith: (term, updateIds, alongside) =>
      alongside === undefined ? complete(sql, term, updateIds) : complete(sql, term, updateIds).pipe(
        Effect.tap((owned) => (owned.size === 0 ? Effect.void : alongside(owned))),
        sql.withTransaction
      ),
    recordFailure: (term, updateId, error) => recordFailure(sql, term, updateId, error),
    beginAttempt: (term, updateId) => beginAttempt(sql, term, updateId),
    markDead: Effect.fn("Inbox.markDead")((term: string, updateId: number, error: string) =>
      markDead(sql, term, updateId, error)
    ),
    release: Effect.fn("Inbox.release")((term: string, started: ReadonlyArray<number>) => release(sql, term, started)),
    requeueStuck: Effect.fn("Inbox.requeueStuck")((term: string, claimedBefore: DateTime.Utc, limit: number) =>
      requeueStuck(sql, term, claimedBefore, limit)
    ),
    pendingReceivedBefore: (receivedBefore, limit) => pendingReceivedBefore(sql, receivedBefore, limit),
    purgeFinished: (before, limit) => purgeFinished(sql, before, limit),
    stats: stats(sql),
    wake,
    claimHereOnStore
  })
})

/** The inbox service: see the module doc. */
export class Inbox extends Context.Service<Inbox, InboxShape>()("zimage-bot/Inbox") {
  /** The inbox on `SqlClient`, without the `/health` probe (for tests). */
  static readonly layerWithoutHealth = Layer.effect(Inbox, make)

  /** The inbox, plus its `/health` fields and `/metrics` gauges (`InboxHealth.ts`). */
  static readonly layer = Layer.effect(
    Inbox,
    Effect.gen(function*() {
      const inbox = yield* make
      yield* registerInboxHealth(inbox.stats)
      return inbox
    })
  )
}
