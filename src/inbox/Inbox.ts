/**
 * The durable inbox of Telegram updates (`telegram_updates`, DESIGN §3): every
 * update is committed here before Telegram is told it arrived, and leaves only
 * as `done` or `dead`. All of the table's SQL lives in this module.
 *
 * Life of a row:
 *
 *   pending ──claim──▶ processing ──▶ done
 *      ▲                   │ └──────▶ dead (attempts exhausted / undecodable)
 *      └── release / requeue (shutdown, stuck on a dead leader)
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
 * costs two. A lost NOTIFY costs latency, never an update: the dispatcher
 * also sweeps every few seconds.
 *
 * Stores are group-committed: concurrent webhooks share one INSERT and one
 * commit (`storeWriters` statements at most in flight, each taking everything
 * queued meanwhile), and each caller still hears only once its own rows are
 * committed. A batch that fails because of its rows (not the database) is
 * retried request by request, so one bad update never fails its neighbours.
 */
import {
  Cause,
  Context,
  Data,
  DateTime,
  Deferred,
  Duration,
  Effect,
  Exit,
  Layer,
  Metric,
  Option,
  Predicate,
  Queue,
  Schema
} from "effect"
import type { TimeoutError } from "effect/Cause"
import { SqlClient } from "effect/sql/SqlClient"
import type { SqlError } from "effect/sql/SqlError"
import { Health } from "../platform/Health.ts"
import * as Metrics from "../platform/Metrics.ts"
import { makeProblemLog } from "../platform/ProblemLog.ts"
import { Int8 } from "../database/SqlColumns.ts"
import { routingOf, type UpdateEnvelope } from "../telegram/TelegramUpdate.ts"
import * as UtcTime from "../platform/UtcTime.ts"

/** The NOTIFY channel a stored update is announced on. */
export const CHANNEL = "telegram_updates"

export class InboxUnavailable extends Schema.TaggedError<InboxUnavailable>()("InboxUnavailable", {
  message: Schema.String
}) {}

/** Migration 0001: the inbox table and the partial indexes its hot queries use. */
export const migration = Effect.gen(function*() {
  const sql = yield* SqlClient
  yield* sql`
    CREATE TABLE telegram_updates (
      update_id bigint PRIMARY KEY,
      chat_id bigint,
      user_id bigint,
      kind text NOT NULL,
      payload jsonb NOT NULL,
      received_at timestamptz NOT NULL,
      status text NOT NULL DEFAULT 'pending'
        CHECK (status IN ('pending', 'processing', 'done', 'dead')),
      attempts integer NOT NULL DEFAULT 0,
      claimed_at timestamptz,
      claimed_by text,
      processed_at timestamptz,
      last_error text
    )`
  // Claims (in update_id order) and queue_depth.
  yield* sql`
    CREATE INDEX telegram_updates_unfinished ON telegram_updates (update_id)
    WHERE status IN ('pending', 'processing')`
  // "Is an earlier update of this chat still being processed elsewhere?"
  yield* sql`
    CREATE INDEX telegram_updates_processing_chat ON telegram_updates (chat_id)
    WHERE status = 'processing'`
  // Orphan detection and the oldest pending age.
  yield* sql`
    CREATE INDEX telegram_updates_pending_received ON telegram_updates (received_at)
    WHERE status = 'pending'`
  // Retention and dead counts.
  yield* sql`
    CREATE INDEX telegram_updates_finished ON telegram_updates (status, processed_at)
    WHERE status IN ('done', 'dead')`
})

// ---------------------------------------------------------------------------
// Rows

const ClaimedRow = Schema.Struct({
  update_id: Int8,
  chat_id: Schema.NullOr(Int8),
  kind: Schema.String,
  payload: Schema.Unknown,
  attempts: Schema.Int,
  received_at: Schema.Unknown
})

/** An update this leadership term now owns. */
export interface ClaimedUpdate {
  readonly updateId: number
  readonly chatId: number | null
  readonly kind: string
  readonly payload: unknown
  /** Handler runs started so far, this one included. */
  readonly attempts: number
  /** `None` if the stored value could not be read (never expected). */
  readonly receivedAt: Option.Option<DateTime.Utc>
}

export interface StuckUpdate {
  readonly updateId: number
  readonly claimedBy: string | null
  readonly claimedAt: Option.Option<DateTime.Utc>
}

export interface PendingUpdate {
  readonly updateId: number
  readonly chatId: number | null
  readonly receivedAt: Option.Option<DateTime.Utc>
}

export interface InboxStats {
  /** Stored and not finished: pending + processing. */
  readonly queueDepth: number
  readonly processing: number
  readonly dead: number
  readonly oldestPendingReceivedAt: Option.Option<DateTime.Utc>
}

const StuckRow = Schema.Struct({ update_id: Int8, claimed_by: Schema.NullOr(Schema.String), claimed_at: Schema.Unknown })
const PendingRow = Schema.Struct({ update_id: Int8, chat_id: Schema.NullOr(Int8), received_at: Schema.Unknown })
const StatsRow = Schema.Struct({
  unfinished: Int8,
  processing: Int8,
  dead: Int8,
  oldest_pending: Schema.Unknown
})

/** jsonb refuses `\u0000`; Telegram text never needs it, so it becomes U+FFFD. */
const toJsonText = (payload: unknown): string =>
  JSON.stringify(payload, (_key, value) =>
    typeof value === "string" && value.includes("\u0000") ? value.replaceAll("\u0000", "\uFFFD") : value)

const decodeRows = <S extends Schema.Decoder<unknown>>(schema: S) => (rows: ReadonlyArray<unknown>) =>
  Schema.decodeUnknownEffect(Schema.Array(schema))(rows).pipe(Effect.orDie) as Effect.Effect<
    ReadonlyArray<S["Type"]>
  >

const timestamp = (value: unknown) => UtcTime.fromUnknown(value)

// ---------------------------------------------------------------------------
// The service

export interface InboxShape {
  /**
   * Stores a batch (duplicates ignored), in one statement shared with the
   * stores queued beside it (group commit), and, when anything new was
   * stored, announces it (a coalesced NOTIFY after the commit). Returns, once
   * the rows are committed, how many of these updates were new. Fails only
   * with `InboxUnavailable` (database down, not migrated, shutting down, no
   * commit within 5 s, …).
   */
  readonly store: (updates: ReadonlyArray<UpdateEnvelope>) => Effect.Effect<number, InboxUnavailable>
  /**
   * Claims up to `limit` pending updates in `update_id` order for `term`,
   * skipping chats with an update still `processing` under another term.
   */
  readonly claim: (term: string, limit: number) => Effect.Effect<ReadonlyArray<ClaimedUpdate>, SqlError>
  /** Marks finished (`done`) updates this term owns; returns how many it still owned. */
  readonly complete: (term: string, updateIds: ReadonlyArray<number>) => Effect.Effect<number, SqlError>
  /** Records a failed attempt's error; the row stays `processing`. */
  readonly recordFailure: (term: string, updateId: number, error: string) => Effect.Effect<boolean, SqlError>
  /** Counts the start of another attempt (after a backoff). */
  readonly beginAttempt: (term: string, updateId: number) => Effect.Effect<boolean, SqlError>
  readonly markDead: (term: string, updateId: number, error: string) => Effect.Effect<boolean, SqlError>
  /**
   * Hands every row still `processing` under this term back to `pending`
   * (graceful shutdown, after the term's fibers stopped). Rows not in
   * `started` get their claim's attempt back: they were claimed, never run.
   */
  readonly release: (term: string, started: ReadonlyArray<number>) => Effect.Effect<number, SqlError>
  /**
   * Returns to `pending` the rows `processing` under any other term whose
   * claim is older than `claimedBefore`.
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
  readonly stats: Effect.Effect<InboxStats, SqlError>
  /** NOTIFYs the channel: wakes the dispatcher (e.g. after a requeue). */
  readonly wake: Effect.Effect<void, SqlError>
}

/** How long a store may wait for its commit, queueing included. */
const storeTimeout = Duration.seconds(5)

/**
 * Statements storing updates at once. Concurrent webhooks share them (group
 * commit): while they are busy, new updates queue, and the next free writer
 * stores everything queued in one statement and one commit. Under load that
 * saves a round trip, a transaction and a commit per update; an update that
 * finds the writer idle is stored at once, as before.
 *
 * One writer measured best (`npm run bench`, 2 cores): with 8 webhook senders
 * 2,415 acks/s (1 writer) against 1,709/s (2) and 1,799/s (3); with 32 senders
 * 4,127/s, 2,961/s and 2,764/s. The single-threaded service is CPU-bound, and
 * bigger batches cost less CPU per update; 256 stores per statement still
 * allow tens of thousands per second.
 */
export const storeWriters = 1
/**
 * Stores joined in one statement at most: bounds its parameter (a webhook
 * brings one update; the poller, the only store of many, runs alone).
 */
const maxStoresPerStatement = 256

/** Stores still queued or in hand when the inbox closes (shutdown). */
class InboxClosed extends Data.TaggedError("InboxClosed")<{}> {}
const closedExit = Exit.fail(new InboxClosed())

type StoreFailure = SqlError | TimeoutError | InboxClosed

interface StoreRequest {
  readonly updates: ReadonlyArray<UpdateEnvelope>
  readonly result: Deferred.Deferred<number, StoreFailure>
}

/**
 * A failure caused by the rows themselves (SQLSTATE class 22, data
 * exception, or 23, integrity violation), not by the database being
 * unavailable: worth retrying each request of the batch alone.
 */
const isRowFault = (cause: Cause.Cause<unknown>): boolean => {
  const error = Cause.squash(cause)
  if (!Predicate.isTagged(error, "SqlError")) return false
  const code = ((error as SqlError).reason.cause as { code?: unknown } | undefined)?.code
  return typeof code === "string" && (code.startsWith("22") || code.startsWith("23"))
}

/** A short reason for a failed store: the database's message, never the payload. */
const describeStoreFailure = (cause: Cause.Cause<unknown>): string => {
  const error = Cause.squash(cause)
  if (Cause.isTimeoutError(error)) return `the database did not answer within ${Duration.format(storeTimeout)}`
  if (Predicate.isTagged(error, "InboxClosed")) return "the inbox is shutting down"
  if (Predicate.isTagged(error, "SqlError")) return (error as SqlError).message
  return "unexpected error"
}

const make = Effect.gen(function*() {
  const sql = yield* SqlClient
  const now = Effect.map(DateTime.now, DateTime.toDateUtc)
  // Once per change, not once per request: Telegram retries a lot during an outage.
  const storeProblems = makeProblemLog()

  const notify = sql`SELECT pg_notify(${CHANNEL}, '')`.pipe(Effect.asVoid)
  // The coalesced announcer (see the module comment): a full slot drops the offer.
  const announcements = yield* Queue.dropping<void>(1)
  const announce = Queue.offer(announcements, undefined).pipe(Effect.asVoid)
  yield* Queue.take(announcements).pipe(
    // A failed or slow NOTIFY is left to the dispatcher's sweep.
    Effect.andThen(notify.pipe(Effect.timeout("5 seconds"), Effect.ignore)),
    Effect.forever,
    Effect.forkScoped
  )

  /** One statement for any number of rows; returns the `update_id`s that were new. */
  const insertNew = (updates: ReadonlyArray<UpdateEnvelope>) =>
    Effect.gen(function*() {
      const receivedAt = yield* now
      // One text parameter holding every row: no per-column arrays (whose all-null
      // columns the driver cannot type) and one round trip for any batch size.
      const rowsJson = toJsonText(updates.map((update) => {
        const routing = routingOf(update)
        return {
          update_id: update.update_id,
          chat_id: routing.chatId,
          user_id: routing.userId,
          kind: routing.kind,
          payload: update
        }
      }))
      const rows = yield* sql<{ update_id: unknown }>`
        INSERT INTO telegram_updates (update_id, chat_id, user_id, kind, payload, received_at)
        SELECT r.update_id, r.chat_id, r.user_id, r.kind, r.payload, ${receivedAt}
        FROM jsonb_to_recordset(${rowsJson}::jsonb)
          AS r(update_id bigint, chat_id bigint, user_id bigint, kind text, payload jsonb)
        ON CONFLICT (update_id) DO NOTHING
        RETURNING update_id`
      return new Set(rows.map((row) => Number(row.update_id)))
    })

  // Group commit (see the module comment): every store joins a queue; each
  // writer takes everything queued and stores it in one statement.
  const requests = yield* Queue.unbounded<StoreRequest>()

  const finish = (request: StoreRequest, exit: Exit.Exit<number, StoreFailure>) =>
    Deferred.doneUnsafe(request.result, exit)

  /** Stores the requests' updates together; on a fault of the rows themselves, each request alone. */
  const writeBatch = (batch: ReadonlyArray<StoreRequest>): Effect.Effect<void> =>
    Effect.gen(function*() {
      const exit = yield* Effect.exit(
        insertNew(batch.flatMap((request) => request.updates)).pipe(Effect.timeout(storeTimeout))
      )
      if (Exit.isSuccess(exit)) {
        const fresh = exit.value
        const anyNew = fresh.size > 0
        // Deleting as it counts: an update_id sent twice in one batch is new once.
        for (const request of batch) {
          finish(request, Exit.succeed(request.updates.filter((update) => fresh.delete(update.update_id)).length))
        }
        if (anyNew) yield* announce
        return
      }
      if (batch.length > 1 && isRowFault(exit.cause)) {
        // One bad row must not cost its neighbours their 200.
        for (const request of batch) yield* writeBatch([request])
        return
      }
      for (const request of batch) finish(request, Exit.failCause(exit.cause))
    }).pipe(
      // Interrupted (shutdown): nobody may wait on a batch that will not finish.
      Effect.onInterrupt(() => Effect.sync(() => batch.forEach((request) => finish(request, closedExit))))
    )

  yield* Queue.takeBetween(requests, 1, maxStoresPerStatement).pipe(
    Effect.flatMap(writeBatch),
    Effect.forever,
    Effect.forkScoped,
    Effect.replicateEffect(storeWriters)
  )
  yield* Effect.addFinalizer(() =>
    Queue.clear(requests).pipe(
      Effect.map((left) => left.forEach((request) => finish(request, closedExit))),
      Effect.andThen(Queue.shutdown(requests)),
      Effect.ignore
    )
  )

  const store = Effect.fn("Inbox.store")(function*(updates: ReadonlyArray<UpdateEnvelope>) {
    if (updates.length === 0) return 0
    const result = yield* Deferred.make<number, StoreFailure>()
    if (!(yield* Queue.offer(requests, { updates, result }))) return yield* new InboxClosed()
    return yield* Deferred.await(result)
  }, (effect) =>
    effect.pipe(
      Effect.timeout(storeTimeout),
      Effect.tap(() => storeProblems.recovered("[INBOX] storing updates works again")),
      Effect.catchCause((cause) =>
        Effect.gen(function*() {
          const reason = describeStoreFailure(cause)
          yield* storeProblems.failing(`[INBOX] cannot store updates (Telegram will retry): ${reason}`)
          return yield* new InboxUnavailable({ message: `the update could not be stored: ${reason}` })
        })
      )
    ))

  const claim = Effect.fn("Inbox.claim")(function*(term: string, limit: number) {
    const claimedAt = yield* now
    const rows = yield* sql`
      WITH candidates AS (
        SELECT t.update_id
        FROM telegram_updates t
        WHERE t.status = 'pending'
          AND NOT EXISTS (
            SELECT 1 FROM telegram_updates p
            WHERE p.status = 'processing' AND p.chat_id = t.chat_id AND p.claimed_by IS DISTINCT FROM ${term}
          )
        ORDER BY t.update_id
        LIMIT ${limit}
        FOR UPDATE SKIP LOCKED
      )
      UPDATE telegram_updates u
      SET status = 'processing', claimed_at = ${claimedAt}, claimed_by = ${term}, attempts = u.attempts + 1
      FROM candidates c
      WHERE u.update_id = c.update_id
      RETURNING u.update_id, u.chat_id, u.kind, u.payload, u.attempts, u.received_at`.pipe(
      Effect.flatMap(decodeRows(ClaimedRow))
    )
    return rows
      .map((row): ClaimedUpdate => ({
        updateId: row.update_id,
        chatId: row.chat_id,
        kind: row.kind,
        payload: row.payload,
        attempts: row.attempts,
        receivedAt: timestamp(row.received_at)
      }))
      .sort((a, b) => a.updateId - b.updateId)
  })

  const complete = (term: string, updateIds: ReadonlyArray<number>) =>
    updateIds.length === 0 ? Effect.succeed(0) : Effect.gen(function*() {
      const processedAt = yield* now
      const rows = yield* sql`
        UPDATE telegram_updates
        SET status = 'done', processed_at = ${processedAt}, claimed_at = NULL
        WHERE update_id = ANY(${updateIds}) AND status = 'processing' AND claimed_by = ${term}
        RETURNING update_id`
      return rows.length
    })

  const recordFailure = (term: string, updateId: number, error: string) =>
    sql`
      UPDATE telegram_updates SET last_error = ${error}
      WHERE update_id = ${updateId} AND status = 'processing' AND claimed_by = ${term}
      RETURNING update_id`.pipe(Effect.map((rows) => rows.length > 0))

  const beginAttempt = (term: string, updateId: number) =>
    Effect.gen(function*() {
      const claimedAt = yield* now
      const rows = yield* sql`
        UPDATE telegram_updates SET attempts = attempts + 1, claimed_at = ${claimedAt}
        WHERE update_id = ${updateId} AND status = 'processing' AND claimed_by = ${term}
        RETURNING update_id`
      return rows.length > 0
    })

  const markDead = (term: string, updateId: number, error: string) =>
    Effect.gen(function*() {
      const processedAt = yield* now
      const rows = yield* sql`
        UPDATE telegram_updates
        SET status = 'dead', last_error = ${error}, processed_at = ${processedAt}, claimed_at = NULL
        WHERE update_id = ${updateId} AND status = 'processing' AND claimed_by = ${term}
        RETURNING update_id`
      return rows.length > 0
    })

  const release = (term: string, started: ReadonlyArray<number>) =>
    sql`
      UPDATE telegram_updates
      SET status = 'pending', claimed_at = NULL, claimed_by = NULL,
          attempts = GREATEST(attempts - CASE WHEN update_id = ANY(${started}) THEN 0 ELSE 1 END, 0)
      WHERE status = 'processing' AND claimed_by = ${term}
      RETURNING update_id`.pipe(Effect.map((rows) => rows.length))

  const requeueStuck = (term: string, claimedBefore: DateTime.Utc, limit: number) =>
    sql`
      WITH stuck AS (
        SELECT update_id, claimed_by, claimed_at FROM telegram_updates
        WHERE status = 'processing' AND claimed_by IS DISTINCT FROM ${term}
          AND (claimed_at IS NULL OR claimed_at < ${DateTime.toDateUtc(claimedBefore)})
        ORDER BY update_id
        LIMIT ${limit}
        FOR UPDATE SKIP LOCKED
      )
      UPDATE telegram_updates u
      SET status = 'pending', claimed_at = NULL, claimed_by = NULL
      FROM stuck s
      WHERE u.update_id = s.update_id
      RETURNING s.update_id, s.claimed_by, s.claimed_at`.pipe(
      Effect.flatMap(decodeRows(StuckRow)),
      Effect.map((rows) =>
        rows
          .map((row): StuckUpdate => ({
            updateId: row.update_id,
            claimedBy: row.claimed_by,
            claimedAt: timestamp(row.claimed_at)
          }))
          .sort((a, b) => a.updateId - b.updateId)
      )
    )

  const pendingReceivedBefore = (receivedBefore: DateTime.Utc, limit: number) =>
    sql`
      SELECT update_id, chat_id, received_at FROM telegram_updates
      WHERE status = 'pending' AND received_at < ${DateTime.toDateUtc(receivedBefore)}
      ORDER BY received_at, update_id
      LIMIT ${limit}`.pipe(
      Effect.flatMap(decodeRows(PendingRow)),
      Effect.map((rows) =>
        rows.map((row): PendingUpdate => ({
          updateId: row.update_id,
          chatId: row.chat_id,
          receivedAt: timestamp(row.received_at)
        }))
      )
    )

  const purgeFinished = (before: DateTime.Utc, limit: number) =>
    sql`
      DELETE FROM telegram_updates WHERE update_id IN (
        SELECT update_id FROM telegram_updates
        WHERE status IN ('done', 'dead') AND processed_at < ${DateTime.toDateUtc(before)}
        LIMIT ${limit}
      )
      RETURNING update_id`.pipe(Effect.map((rows) => rows.length))

  const stats = sql`
    SELECT
      (SELECT count(*) FROM telegram_updates WHERE status IN ('pending', 'processing')) AS unfinished,
      (SELECT count(*) FROM telegram_updates WHERE status = 'processing') AS processing,
      (SELECT count(*) FROM telegram_updates WHERE status = 'dead') AS dead,
      (SELECT min(received_at) FROM telegram_updates WHERE status = 'pending') AS oldest_pending`.pipe(
    Effect.flatMap(decodeRows(StatsRow)),
    Effect.map(([row]): InboxStats => ({
      queueDepth: row?.unfinished ?? 0,
      processing: row?.processing ?? 0,
      dead: row?.dead ?? 0,
      oldestPendingReceivedAt: row === undefined ? Option.none() : timestamp(row.oldest_pending)
    }))
  )

  return Inbox.of({
    store,
    claim,
    complete,
    recordFailure,
    beginAttempt,
    markDead,
    release,
    requeueStuck,
    pendingReceivedBefore,
    purgeFinished,
    stats,
    wake: notify
  })
})

export class Inbox extends Context.Service<Inbox, InboxShape>()("zimage-bot/Inbox") {
  /** The inbox on `SqlClient`, without the `/health` probe (for tests). */
  static readonly layerWithoutHealth = Layer.effect(Inbox, make)

  /**
   * The inbox, plus its `/health` fields: `queue_depth` (stored, not yet
   * finished), `updates_processing`, `dead_updates`, `oldest_pending_age_s`;
   * and its `/metrics` gauges `zimage_queue_depth` and
   * `zimage_queue_oldest_pending_seconds`, read from the table at scrape time
   * (so they are right on PASSIVE instances too).
   * Health and metrics time their probes out, so a slow database never hangs them.
   */
  static readonly layer = Layer.effect(
    Inbox,
    Effect.gen(function*() {
      const inbox = yield* make
      const health = yield* Health
      const metrics = yield* Metrics.MetricsRefresh
      const current = Effect.gen(function*() {
        const stats = yield* inbox.stats
        const now = yield* DateTime.now
        const oldestPendingAgeSeconds = Option.match(stats.oldestPendingReceivedAt, {
          onNone: () => 0,
          onSome: (at) => UtcTime.toSeconds(UtcTime.age(now, at))
        })
        return { stats, oldestPendingAgeSeconds }
      })
      yield* health.register(
        current.pipe(
          Effect.map(({ oldestPendingAgeSeconds, stats }) => ({
            queue_depth: stats.queueDepth,
            updates_processing: stats.processing,
            dead_updates: stats.dead,
            oldest_pending_age_s: oldestPendingAgeSeconds
          })),
          Effect.orElseSucceed(() => ({}))
        )
      )
      yield* metrics.register(
        current.pipe(
          Effect.flatMap(({ oldestPendingAgeSeconds, stats }) =>
            Effect.andThen(
              Metric.update(Metrics.queueDepth, stats.queueDepth),
              Metric.update(Metrics.queueOldestPendingSeconds, oldestPendingAgeSeconds)
            )
          ),
          Effect.ignore
        )
      )
      return inbox
    })
  )
}
