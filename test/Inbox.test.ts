/**
 * Inbox.store's group commit against the real test PostgreSQL.
 *
 * To make the batches deterministic, a test first holds an EXCLUSIVE lock on
 * `telegram_updates` so that every writer is stuck in its INSERT, then queues
 * the stores it wants batched, then lets go. A BEFORE STATEMENT trigger counts
 * INSERT statements on a sequence, which (unlike a table) keeps counting the
 * statements that fail and roll back.
 */
import { PgClient } from "@effect/sql-pg"
import { assert, describe, it, layer } from "@effect/vitest"
import { Context, DateTime, Deferred, Effect, Exit, Fiber, Layer, Metric, Option, Scope } from "effect"
import { SqlClient } from "effect/sql/SqlClient"
import { TestClock } from "effect/testing"
import {
  ANNOUNCE_SPACING_MS,
  type ClaimedUpdate,
  Inbox,
  type InboxShape,
  type InboxUnavailable,
  makeAnnouncer
} from "../src/inbox/Inbox.ts"
import { claim, CLAIM_WINDOW, CLAIMS_PER_CHAT } from "../src/inbox/sql/claim.ts"
import { complete } from "../src/inbox/sql/finish.ts"
import { releaseClaimed } from "../src/inbox/sql/release.ts"
import { purgeFinished } from "../src/inbox/sql/retention.ts"
import { routed, storeClaimingUpdates, storeUpdates } from "../src/inbox/sql/store.ts"
import { storeTimeout, storeWriters } from "../src/inbox/StoreWriter.ts"
import * as Metrics from "../src/observability/Metrics.ts"
import { message } from "./support/Pipeline.ts"
import { TestConfigLive } from "./support/TestConfig.ts"
import { TestDatabaseLive } from "./support/TestDatabase.ts"

/**
 * Pages of a table's heap or of an index read so far (cache hits included),
 * as PostgreSQL's statistics count them once this connection's are flushed.
 */
const pagesRead = (relation: { readonly table: string } | { readonly index: string }) =>
  Effect.gen(function*() {
    const sql = yield* SqlClient
    yield* sql`SELECT pg_stat_force_next_flush()`
    yield* sql`SELECT pg_stat_clear_snapshot()`
    const [row] = "table" in relation
      ? yield* sql<{ n: string }>`
        SELECT (coalesce(heap_blks_hit, 0) + coalesce(heap_blks_read, 0))::text AS n
        FROM pg_statio_user_tables WHERE relname = ${relation.table}`
      : yield* sql<{ n: string }>`
        SELECT (coalesce(idx_blks_hit, 0) + coalesce(idx_blks_read, 0))::text AS n
        FROM pg_statio_user_indexes WHERE indexrelname = ${relation.index}`
    return Number(row!.n)
  })

/**
 * Runs `effect` on a connection of its own, so that all its statistics are
 * flushed when `pagesRead` reads them (pg_stat_force_next_flush).
 */
const onOneConnection = <A, E>(effect: Effect.Effect<A, E, SqlClient>) =>
  Effect.gen(function*() {
    const url = (yield* PgClient.PgClient).config.url
    return yield* effect.pipe(Effect.provide(PgClient.layer({ url, maxConnections: 1 })))
  })

/**
 * A cost test: `effect` on one connection (`onOneConnection`) with the inbox
 * emptied and autovacuum off for it (each test says why); both are put back
 * afterwards, whatever the outcome.
 */
const onQuietInbox = <A, E>(effect: Effect.Effect<A, E, SqlClient>) =>
  onOneConnection(
    Effect.gen(function*() {
      const sql = yield* SqlClient
      yield* sql`DELETE FROM telegram_updates`
      yield* sql`ALTER TABLE telegram_updates SET (autovacuum_enabled = off)`
      return yield* effect
    }).pipe(
      Effect.ensuring(
        Effect.gen(function*() {
          const sql = yield* SqlClient
          yield* sql`ALTER TABLE telegram_updates RESET (autovacuum_enabled)`
          yield* sql`DELETE FROM telegram_updates`
        }).pipe(Effect.ignore)
      )
    )
  )

/** Writers the inbox runs, seen here as blocked INSERTs. */
const WRITERS = storeWriters
/** One update per writer, each of which it stores while the table is locked. */
const BLOCKER_IDS = Array.from({ length: WRITERS }, (_, i) => 9001 + i)

const countInsertStatements = Effect.gen(function*() {
  const sql = yield* SqlClient
  yield* sql`CREATE SEQUENCE IF NOT EXISTS inbox_insert_statements`
  yield* sql.unsafe(`
    CREATE OR REPLACE FUNCTION count_inbox_insert() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN PERFORM nextval('inbox_insert_statements'); RETURN NULL; END $$`)
  yield* sql.unsafe(`
    CREATE OR REPLACE TRIGGER count_inbox_insert BEFORE INSERT ON telegram_updates
    FOR EACH STATEMENT EXECUTE FUNCTION count_inbox_insert()`)
  yield* sql`ALTER SEQUENCE inbox_insert_statements RESTART`
  return Effect.gen(function*() {
    const [row] = yield* sql<{ last_value: string; is_called: boolean }>`
      SELECT last_value::text, is_called FROM inbox_insert_statements`
    return row!.is_called ? Number(row!.last_value) : 0
  })
})

const storedIds = Effect.gen(function*() {
  const sql = yield* SqlClient
  const rows = yield* sql<{ id: string }>`SELECT update_id::text AS id FROM telegram_updates ORDER BY update_id`
  return rows.map((row) => Number(row.id))
})

/** INSERTs into the inbox that are waiting for a lock right now. */
const blockedInserts = Effect.gen(function*() {
  const sql = yield* SqlClient
  // Inside a transaction pg_stat_activity is read once and cached; this drops that copy.
  yield* sql`SELECT pg_stat_clear_snapshot()`
  const [row] = yield* sql<{ n: number }>`
    SELECT count(*)::int AS n FROM pg_stat_activity
    WHERE datname = current_database() AND wait_event_type = 'Lock' AND query LIKE '%INSERT INTO telegram_updates%'`
  return row!.n
})

/**
 * An empty inbox table and an inbox of the test's own (its writer, timers and
 * clock the test's), on `env` beside the test configuration.
 */
const freshInbox = (env: Record<string, string> = {}) =>
  Effect.gen(function*() {
    const sql = yield* SqlClient
    yield* sql`DELETE FROM telegram_updates`
    return Context.get(
      yield* Layer.build(Layer.fresh(Inbox.layerWithoutHealth).pipe(Layer.provide(TestConfigLive(env)))),
      Inbox
    )
  })

/**
 * Forks `store` while a transaction of the test holds the inbox's table
 * locked, waits (bounded) until its INSERT is stuck behind the lock, and runs
 * `meanwhile` with the store's fiber, still holding the lock; the lock goes
 * as this returns `meanwhile`'s result.
 */
const whileStoreBlocked = <A, E, B, E2, R>(
  store: Effect.Effect<A, E>,
  meanwhile: (store: Fiber.Fiber<A, E>) => Effect.Effect<B, E2, R>
) =>
  Effect.gen(function*() {
    const sql = yield* SqlClient
    return yield* sql.withTransaction(Effect.gen(function*() {
      yield* sql`LOCK TABLE telegram_updates IN EXCLUSIVE MODE`
      const fiber = yield* Effect.forkChild(store)
      let blocked = 0
      for (let round = 0; round < 500 && blocked === 0; round++) blocked = yield* blockedInserts
      assert.strictEqual(blocked, 1, "the store waits for the lock")
      return yield* meanwhile(fiber)
    }))
  })

/**
 * Runs `queued` (forked stores) while every writer is stuck behind a table
 * lock, so that they all wait in the inbox's queue; then releases the lock.
 * Returns the blockers' and the queued stores' fibers.
 */
const whileWritersBlocked = <A, E>(queued: () => Effect.Effect<ReadonlyArray<Fiber.Fiber<A, E>>, never, Inbox>) =>
  Effect.gen(function*() {
    const sql = yield* SqlClient
    const inbox = yield* Inbox
    return yield* sql.withTransaction(Effect.gen(function*() {
      yield* sql`LOCK TABLE telegram_updates IN EXCLUSIVE MODE`
      // One at a time, so that each writer takes exactly one of them.
      const blockers = yield* Effect.forEach(BLOCKER_IDS, (id, i) =>
        Effect.gen(function*() {
          const fiber = yield* Effect.forkChild(inbox.store([message(id, id)] as any))
          // Bounded: each round is a real round trip.
          let blocked = 0
          for (let round = 0; round < 500 && blocked <= i; round++) blocked = yield* blockedInserts
          assert.strictEqual(blocked, i + 1, "each writer in turn should be stuck behind the lock")
          return fiber
        }))
      const fibers = yield* queued()
      // One more round trip: the queued fibers have offered their stores by now.
      assert.strictEqual(yield* blockedInserts, WRITERS)
      return { blockers, fibers }
    }))
  })

layer(Inbox.layerWithoutHealth.pipe(Layer.provideMerge(TestDatabaseLive), Layer.provide(TestConfigLive())))((it) => {
  describe("Inbox.store (group commit)", () => {
    it.effect("stores waiting for a writer share one INSERT; each caller hears about its own updates", () =>
      Effect.gen(function*() {
        const statements = yield* countInsertStatements
        const inbox = yield* Inbox
        // 200 webhooks: updates 1..150, then 1..50 again (Telegram retrying),
        // and one repeat of a blocker's update.
        const ids = [
          ...Array.from({ length: 150 }, (_, i) => i + 1),
          ...Array.from({ length: 50 }, (_, i) => i + 1),
          9001
        ]
        const { blockers, fibers } = yield* whileWritersBlocked(() =>
          Effect.forEach(ids, (id) => Effect.forkChild(inbox.store([message(id, id % 7)] as any)))
        )
        const blockerResults = yield* Effect.forEach(blockers, Fiber.join)
        const results = yield* Effect.forEach(fibers, Fiber.join)

        assert.deepStrictEqual(blockerResults, BLOCKER_IDS.map(() => 1))
        // Each id is new for exactly one caller; the repeats and 9001 were duplicates.
        const newPerId = new Map<number, number>()
        ids.forEach((id, i) => newPerId.set(id, (newPerId.get(id) ?? 0) + results[i]!))
        for (const [id, count] of newPerId) assert.strictEqual(count, id === 9001 ? 0 : 1, `update ${id}`)
        assert.deepStrictEqual(
          yield* storedIds,
          [...Array.from({ length: 150 }, (_, i) => i + 1), ...BLOCKER_IDS]
        )
        // One statement per blocked writer, then one for all 201 queued stores.
        assert.strictEqual(yield* statements, WRITERS + 1)
      }))

    it.effect("an update the database refuses fails only its own store, not the ones batched with it", () =>
      Effect.gen(function*() {
        const sql = yield* SqlClient
        yield* sql`DELETE FROM telegram_updates`
        const statements = yield* countInsertStatements
        const inbox = yield* Inbox
        // 2^64 does not fit a bigint (SQLSTATE 22003). The webhook's decoder
        // would refuse it; a caller of the inbox could still pass it.
        const good = Array.from({ length: 10 }, (_, i) => 100 + i)
        const { fibers } = yield* whileWritersBlocked(() =>
          Effect.forEach(
            [...good, 2 ** 64],
            (id) => Effect.forkChild(Effect.exit(inbox.store([message(id, 5)] as any)))
          )
        )
        const exits = yield* Effect.forEach(fibers, Fiber.join)

        exits.slice(0, good.length).forEach((exit) => assert.deepStrictEqual(exit, Exit.succeed(1)))
        const refused = exits[good.length]!
        assert.isTrue(Exit.isFailure(refused))
        assert.include(String(Exit.isFailure(refused) ? refused.cause : ""), "InboxUnavailable")
        assert.deepStrictEqual(yield* storedIds, [...good, ...BLOCKER_IDS])
        // One per blocked writer, the shared one that failed, then each of the 11 alone.
        assert.strictEqual(yield* statements, WRITERS + 1 + good.length + 1)
      }))
  })

  describe("Inbox.storeUnsafe (the webhook's direct route: no fiber per store)", () => {
    /** `storeUnsafe` as an Effect for the test, failing it if `done` is ever called twice. */
    const viaCallback = (inbox: InboxShape, id: number) =>
      Effect.callback<number, InboxUnavailable>((resume) => {
        let calls = 0
        inbox.storeUnsafe(message(id, id % 7) as any, (exit) => {
          calls++
          assert.strictEqual(calls, 1, `done of update ${id} called more than once`)
          resume(exit)
        })
      })

    it.effect("its stores share one INSERT with the Effect stores; each hears about its own update", () =>
      Effect.gen(function*() {
        const sql = yield* SqlClient
        yield* sql`DELETE FROM telegram_updates`
        const statements = yield* countInsertStatements
        const inbox = yield* Inbox
        // Updates 1..40 by callback, 41..60 and 1..10 again as Effects, and 2^64, which the database refuses.
        const { fibers } = yield* whileWritersBlocked(() =>
          Effect.all([
            ...Array.from({ length: 40 }, (_, i) => Effect.forkChild(Effect.exit(viaCallback(inbox, i + 1)))),
            ...[...Array.from({ length: 20 }, (_, i) => i + 41), ...Array.from({ length: 10 }, (_, i) => i + 1)]
              .map((id) => Effect.forkChild(Effect.exit(inbox.store([message(id, id % 7)] as any)))),
            Effect.forkChild(Effect.exit(viaCallback(inbox, 2 ** 64)))
          ])
        )
        const exits = yield* Effect.forEach(fibers, Fiber.join)
        exits.slice(0, 60).forEach((exit) => assert.deepStrictEqual(exit, Exit.succeed(1)))
        exits.slice(60, 70).forEach((exit) => assert.deepStrictEqual(exit, Exit.succeed(0), "a duplicate"))
        const refused = exits[70]!
        assert.isTrue(Exit.isFailure(refused) && String(refused.cause).includes("InboxUnavailable"))
        assert.deepStrictEqual(yield* storedIds, [...Array.from({ length: 60 }, (_, i) => i + 1), ...BLOCKER_IDS])
        // One per blocked writer, the shared one that failed on 2^64, then each of its 71 stores alone.
        assert.strictEqual(yield* statements, WRITERS + 1 + 71)
      }))

    it.effect("a store that does not commit within storeTimeout hears InboxUnavailable, once", () =>
      Effect.gen(function*() {
        // An inbox of this test: its timer runs on this test's TestClock.
        const inbox = yield* freshInbox()
        const exit = yield* whileStoreBlocked(
          Effect.exit(viaCallback(inbox, 501)),
          (store) => Effect.andThen(TestClock.adjust(storeTimeout), Fiber.join(store))
        )
        assert.isTrue(Exit.isFailure(exit))
        assert.include(String(Exit.isFailure(exit) ? exit.cause : ""), "did not answer within")
        // The INSERT went on once the lock was gone: the update is stored, and `done` was not called again.
        let stored: ReadonlyArray<number> = []
        for (let round = 0; round < 500 && stored.length === 0; round++) stored = yield* storedIds
        assert.deepStrictEqual(stored, [501])
      }))

    it.effect("an update over its chat's rate is acknowledged, not stored, and counted as dropped", () =>
      Effect.gen(function*() {
        // An inbox of this test, whose chats may send 3 updates a minute.
        const inbox = yield* freshInbox({ FLOOD_CHAT_RATE: "3/1m" })
        const flood = Metrics.seriesOf(Metrics.updatesDropped, { reason: "flood" })
        const droppedBefore = (yield* Metric.value(flood)).count
        // Four updates of chat 3 (`message(id, id % 7)`).
        const counts = yield* Effect.forEach([703, 710, 717, 724], (id) => viaCallback(inbox, id))
        assert.deepStrictEqual(counts, [1, 1, 1, 0], "the fourth is acknowledged as if a duplicate")
        assert.deepStrictEqual(yield* storedIds, [703, 710, 717])
        assert.strictEqual((yield* Metric.value(flood)).count - droppedBefore, 1)
      }))
  })

  describe("Inbox.store (payloads)", () => {
    it.effect("a payload stored directly with a NUL gets U+FFFD; a literal backslash-u0000 text stays as it is", () =>
      Effect.gen(function*() {
        const sql = yield* SqlClient
        const inbox = yield* Inbox
        const withText = (updateId: number, text: string) => ({
          update_id: updateId,
          message: { message_id: 1, date: 0, chat: { id: 61, type: "private" }, text }
        })
        assert.strictEqual(yield* inbox.store([withText(41_001, "a\u0000b"), withText(41_002, "a\\u0000b")]), 2)
        const rows = yield* sql<{ id: string; text: string }>`
          SELECT update_id::text AS id, payload->'message'->>'text' AS text FROM telegram_updates
          WHERE update_id IN (41001, 41002) ORDER BY update_id`
        assert.deepStrictEqual(rows.map((row) => row.text), ["a\uFFFDb", "a\\u0000b"])
      }))
  })

  describe("Inbox.claimHereOnStore (the ACTIVE dispatcher takes its own stores from the INSERT)", () => {
    /** The rows as the database holds them now. */
    const rowsNow = Effect.gen(function*() {
      const sql = yield* SqlClient
      const rows = yield* sql<{ id: string; status: string; attempts: number; claimed_by: string | null }>`
        SELECT update_id::text AS id, status, attempts, claimed_by FROM telegram_updates ORDER BY update_id`
      return rows.map((row) => `${row.id} ${row.status} ${row.attempts} ${row.claimed_by ?? "-"}`)
    })

    /** A fresh inbox (its writer and clock this test's) and a dispatcher stand-in registered on it until `close`. */
    const registered = (options: {
      readonly room: number
      readonly wants?: (kind: string) => boolean
      /** Runs before each hand-over is recorded (e.g. to hold it). */
      readonly beforeTake?: Effect.Effect<void>
    }) =>
      Effect.gen(function*() {
        const inbox = yield* freshInbox()
        const taken: Array<ClaimedUpdate> = []
        let wakes = 0
        const scope = yield* Scope.make()
        yield* inbox.claimHereOnStore({
          term: "store-term",
          room: () => options.room - taken.length,
          wants: (routing) => options.wants?.(routing.kind) ?? true,
          take: (claimed) =>
            Effect.andThen(options.beforeTake ?? Effect.void, Effect.sync(() => void taken.push(...claimed))),
          wake: () => {
            wakes++
          }
        }).pipe(Scope.provide(scope))
        return { inbox, taken, wakes: () => wakes, close: Scope.close(scope, Exit.void) }
      })

    it.effect("each chat's earliest update is claimed when nothing of its chat is unfinished; the rest wake the dispatcher", () =>
      Effect.gen(function*() {
        const sql = yield* SqlClient
        const { inbox, taken, wakes } = yield* registered({ room: 10 })
        // Chat 2 has a pending update, chat 3 one processing under another term.
        yield* storeUpdates(sql, [message(10, 2), message(20, 3)] as any)
        yield* sql`UPDATE telegram_updates SET status = 'processing', claimed_by = 'other-term' WHERE update_id = 20`

        // One store, so one statement: chat 1 twice (its later update first), chats 2, 3 and 4 once.
        const stored = yield* inbox.store(
          [message(102, 1), message(101, 1), message(103, 2), message(104, 3), message(105, 4)] as any
        )

        assert.strictEqual(stored, 5)
        assert.deepStrictEqual(taken.map((row) => [row.updateId, row.chatId, row.attempts, row.kind]), [
          [101, 1, 1, "message"],
          [105, 4, 1, "message"]
        ])
        assert.deepStrictEqual(taken[0]!.payload, message(101, 1), "the update as it was stored")
        assert.isTrue(Option.isSome(taken[0]!.receivedAt))
        assert.deepStrictEqual(yield* rowsNow, [
          "10 pending 0 -",
          "20 processing 0 other-term",
          "101 processing 1 store-term",
          "102 pending 0 -",
          "103 pending 0 -",
          "104 pending 0 -",
          "105 processing 1 store-term"
        ])
        assert.strictEqual(wakes(), 1, "the pending ones woke the dispatcher once")

        // All claimed on storing: no wake-up at all.
        yield* inbox.store([message(106, 5)] as any)
        assert.deepStrictEqual(taken.map((row) => row.updateId), [101, 105, 106])
        assert.strictEqual(wakes(), 1)
        // A duplicate is neither stored nor claimed again.
        assert.strictEqual(yield* inbox.store([message(106, 5)] as any), 0)
        assert.deepStrictEqual(taken.map((row) => row.updateId), [101, 105, 106])
      }))

    it.effect("a claim returns only once a store that claimed the chat's earlier update has handed it over", () =>
      Effect.gen(function*() {
        const handOver = yield* Deferred.make<void>()
        const { inbox, taken } = yield* registered({ room: 10, beforeTake: Deferred.await(handOver) })
        // 601 is claimed by its INSERT, 602 (same chat) stored pending; the hand-over of 601 is held.
        const store = yield* Effect.forkChild(inbox.store([message(601, 5), message(602, 5)] as any))
        let pending: string | undefined
        for (let round = 0; round < 500 && pending === undefined; round++) {
          pending = (yield* rowsNow).find((row) => row.startsWith("602 pending"))
        }
        assert.isDefined(pending, "the statement committed")
        // A claim may take 602 (its chat's earlier row is this term's), but must not return it before 601 is handed over.
        const claim = yield* Effect.forkChild(inbox.claim("store-term", 64))
        for (let round = 0; round < 5; round++) yield* (yield* SqlClient)`SELECT 1`
        assert.isUndefined(claim.pollUnsafe(), "the claim returned while 601 was not handed over")
        yield* Deferred.succeed(handOver, undefined)
        const claimed = yield* Fiber.join(claim)
        assert.deepStrictEqual(taken.map((row) => row.updateId), [601])
        assert.deepStrictEqual(claimed.map((row) => row.updateId), [602])
        assert.strictEqual(yield* Fiber.join(store), 2)
      }))

    it.effect("claims stop at the dispatcher's room and skip what it does not want; without it stores are pending", () =>
      Effect.gen(function*() {
        const { close, inbox, taken, wakes } = yield* registered({ room: 2, wants: (kind) => kind === "message" })
        const edited = {
          update_id: 203,
          edited_message: { message_id: 1, date: 0, chat: { id: 7, type: "private" }, text: "edited" }
        }
        yield* inbox.store([message(201, 5), edited, message(202, 6), message(204, 8)] as any)
        assert.deepStrictEqual(taken.map((row) => row.updateId), [201, 202])
        assert.strictEqual(wakes(), 1)

        yield* close
        yield* inbox.store([message(205, 9)] as any)
        assert.deepStrictEqual(taken.map((row) => row.updateId), [201, 202], "no dispatcher, no claim")
        assert.deepStrictEqual(yield* rowsNow, [
          "201 processing 1 store-term",
          "202 processing 1 store-term",
          "203 pending 0 -",
          "204 pending 0 -",
          "205 pending 0 -"
        ])
      }))

    it.effect("a statement that commits after the registration ended hands its claims back to pending", () =>
      Effect.gen(function*() {
        const { close, inbox, taken } = yield* registered({ room: 10 })
        // The term stops while the statement waits; stopping does not wait for the writer.
        const store = yield* whileStoreBlocked(
          inbox.store([message(301, 5)] as any),
          (store) => Effect.as(close, store)
        )
        assert.strictEqual(yield* Fiber.join(store), 1, "stored")
        assert.deepStrictEqual(taken, [], "nobody to take it")
        assert.deepStrictEqual(yield* rowsNow, ["301 pending 0 -"], "handed back before the store was answered")
      }))

    it.effect("a statement that claimed and failed leaves nothing processing", () =>
      Effect.gen(function*() {
        const { inbox, taken } = yield* registered({ room: 10 })
        // The writer gives the statement up (its timeout), which cancels it.
        const exit = yield* whileStoreBlocked(
          Effect.exit(inbox.store([message(401, 5)] as any)),
          (store) => Effect.andThen(TestClock.adjust(storeTimeout), Fiber.join(store))
        )
        assert.isTrue(Exit.isFailure(exit))
        // The writer runs one statement at a time: once the next store is in, the first is over.
        assert.strictEqual(yield* inbox.store([message(402, 6)] as any), 1)
        assert.deepStrictEqual(taken.map((row) => row.updateId), [402], "nobody took 401")
        // 401 was cancelled, or committed after the lock and then handed back (in the background).
        let first: string | undefined
        for (let round = 0; round < 500; round++) {
          first = (yield* rowsNow).find((row) => row.startsWith("401 "))
          if (first === undefined || !first.includes("processing")) break
        }
        assert.include([undefined, "401 pending 0 -"], first)
      }))

    it.effect("the hand-back after a failed store takes back only that term's listed rows, giving the attempt back", () =>
      Effect.gen(function*() {
        const sql = yield* SqlClient
        yield* sql`DELETE FROM telegram_updates`
        yield* storeUpdates(sql, [message(501, 1), message(502, 2), message(503, 3)] as any)
        yield* sql`UPDATE telegram_updates SET status = 'processing', attempts = 1, claimed_by = 'store-term'`
        yield* sql`UPDATE telegram_updates SET claimed_by = 'other-term' WHERE update_id = 503`
        assert.strictEqual(yield* releaseClaimed(sql, "store-term", [501, 503, 999]), 1)
        const rows = yield* sql<{ id: string; status: string; attempts: number; claimed_by: string | null }>`
          SELECT update_id::text AS id, status, attempts, claimed_by FROM telegram_updates ORDER BY update_id`
        assert.deepStrictEqual(rows.map((row) => `${row.id} ${row.status} ${row.attempts} ${row.claimed_by ?? "-"}`), [
          "501 pending 0 -",
          "502 processing 1 store-term",
          "503 processing 1 other-term"
        ])
      }))
  })

  describe("Inbox.claim (fair between chats)", () => {
    it.effect("a chat with a backlog takes at most CLAIMS_PER_CHAT places; the other chats are claimed beside it", () =>
      Effect.gen(function*() {
        const sql = yield* SqlClient
        const inbox = yield* Inbox
        yield* sql`DELETE FROM telegram_updates`
        const FLOODER = 77
        // 200 updates of one chat first (two forwards of 100 messages), then 30 other chats: all in
        // the claim's window (a chat whose backlog fills the window is the next test's case).
        const flood = Array.from({ length: 200 }, (_, i) => message(20_000 + i, FLOODER))
        assert.isBelow(flood.length + 30, CLAIM_WINDOW)
        const others = Array.from({ length: 30 }, (_, i) => message(30_000 + i, 100 + i))
        yield* inbox.store(flood as any)
        yield* inbox.store(others as any)

        const first = yield* inbox.claim("fair-term", 64)
        const ofFlooder = first.filter((u) => u.chatId === FLOODER).map((u) => u.updateId)
        assert.deepStrictEqual(ofFlooder, [20_000, 20_001, 20_002, 20_003], "the flooder's earliest, in order")
        assert.strictEqual(first.length - ofFlooder.length, 30, "every other chat in the same claim")

        // While those four are held, the flooder gets nothing more; once two finish, two more.
        assert.deepStrictEqual(yield* inbox.claim("fair-term", 64), [])
        yield* inbox.complete("fair-term", [20_000, 20_001])
        const next = yield* inbox.claim("fair-term", 64)
        assert.deepStrictEqual(next.map((u) => u.updateId), [20_004, 20_005])

        // A chat still processing under another term is not claimed at all (order across failover).
        yield* sql`UPDATE telegram_updates SET claimed_by = 'dead-term' WHERE update_id = 20002`
        yield* inbox.complete("fair-term", [20_003, 20_004, 20_005])
        assert.deepStrictEqual(yield* inbox.claim("fair-term", 64), [])
        yield* sql`DELETE FROM telegram_updates`
      }))

    it.effect("a claim reads a few heap pages however many updates were handled before it", () =>
      // Autovacuum off: a pass meanwhile would hold back the horizon that marking entries dead needs.
      onQuietInbox(
        Effect.gen(function*() {
          const sql = yield* SqlClient
          const heapPagesRead = pagesRead({ table: "telegram_updates" })
          // 6,000 updates handled: each leaves dead entries in the partial indexes until VACUUM.
          yield* storeUpdates(sql, Array.from({ length: 6_000 }, (_, i) => message(60_000 + i, 5_000 + i)) as any)
          for (let round = 0; round < 100; round++) {
            const claimed = yield* claim(sql, "cost-term", 256, CLAIMS_PER_CHAT)
            if (claimed.length === 0) break
            yield* complete(sql, "cost-term", claimed.map((u) => u.updateId))
          }
          yield* storeUpdates(sql, Array.from({ length: 5 }, (_, i) => message(80_000 + i, 19_000 + i)) as any)

          const before = yield* heapPagesRead
          const claimed = yield* claim(sql, "cost-term", 256, CLAIMS_PER_CHAT)
          const pages = (yield* heapPagesRead) - before
          assert.deepStrictEqual(claimed.map((u) => u.updateId), [80_000, 80_001, 80_002, 80_003, 80_004])
          // A bitmap scan over the dead entries visits every page those 6,000 rows ever lived in (about 500).
          assert.isBelow(pages, 100, `heap pages read by one claim: ${pages}`)
        })
      ))

    it.effect("a retention purge reads a few index pages however many finished rows are kept", () =>
      // Autovacuum off: the count is the index's, from any backend, and an autovacuum pass (the
      // inserts below start one) would read the whole index meanwhile.
      onQuietInbox(
        Effect.gen(function*() {
          const sql = yield* SqlClient
          const indexPagesRead = pagesRead({ index: "telegram_updates_finished" })
          // 100,000 finished rows within the retention period (one in a hundred dead), 3 past it.
          const now = Date.UTC(2030, 0, 10)
          yield* sql`
            INSERT INTO telegram_updates (update_id, chat_id, kind, payload, received_at, status, processed_at)
            SELECT n, n, 'message', '{}'::jsonb, ${new Date(now - 3_600_000)},
              CASE WHEN n % 100 = 0 THEN 'dead' ELSE 'done' END, ${new Date(now - 3_600_000)}
            FROM generate_series(1, 100000) AS n`
          yield* sql`
            INSERT INTO telegram_updates (update_id, chat_id, kind, payload, received_at, status, processed_at)
            SELECT n, n, 'message', '{}'::jsonb, ${new Date(now - 72 * 3_600_000)},
              CASE WHEN n = 100002 THEN 'dead' ELSE 'done' END, ${new Date(now - 72 * 3_600_000)}
            FROM generate_series(100001, 100003) AS n`
          yield* sql`ANALYZE telegram_updates`

          const before = yield* indexPagesRead
          const purged = yield* purgeFinished(sql, DateTime.makeUnsafe(now - 48 * 3_600_000), 1000)
          const pages = (yield* indexPagesRead) - before
          assert.strictEqual(purged, 3, "the three old rows, done and dead")
          // Reading the whole index (every kept row) is about 80 pages; the two ranges and the
          // planner's look at the index's ends are about 10.
          assert.isBelow(pages, 30, `index pages read by one purge: ${pages}`)
          const [left] = yield* sql<{ n: string }>`SELECT count(*)::text AS n FROM telegram_updates`
          assert.strictEqual(Number(left!.n), 100_000)
        })
      ))

    it.effect("statements that find rows by update_id or chat read a few pages however many rows are unfinished, whatever the statistics say", () =>
      // Autovacuum off: its ANALYZE would put right the statistics this test keeps stale on purpose.
      onQuietInbox(
        Effect.gen(function*() {
          const sql = yield* SqlClient
          // Statistics from an inbox of 3,000 handled updates: the planner believes nothing is pending or processing.
          yield* storeUpdates(sql, Array.from({ length: 3_000 }, (_, i) => message(200_000 + i, 20_000 + i)) as any)
          for (let round = 0; round < 100; round++) {
            const handled = yield* claim(sql, "handled-term", 256, CLAIMS_PER_CHAT)
            if (handled.length === 0) break
            yield* complete(sql, "handled-term", handled.map((u) => u.updateId))
          }
          yield* sql`VACUUM ANALYZE telegram_updates`
          // A backlog of other chats: 3,000 updates stored, 400 of them then claimed by a term.
          yield* storeUpdates(sql, Array.from({ length: 3_000 }, (_, i) => message(300_000 + i, 30_000 + i)) as any)
          assert.strictEqual((yield* claim(sql, "backlog-term", 256, CLAIMS_PER_CHAT)).length, 256)
          assert.strictEqual((yield* claim(sql, "backlog-term", 144, CLAIMS_PER_CHAT)).length, 144)
          const heapPagesRead = pagesRead({ table: "telegram_updates" })
          const heapPagesOf = <A, E>(statement: Effect.Effect<A, E>) =>
            Effect.gen(function*() {
              const before = yield* heapPagesRead
              const result = yield* statement
              return [result, (yield* heapPagesRead) - before] as const
            })

          // Claiming on storing: five chats of their own and one with a backlog row (pending, so not claimed).
          const offered = [
            ...Array.from({ length: 5 }, (_, i) => message(400_000 + i, 40_000 + i)),
            message(400_010, 30_999)
          ].map((update) => routed(update as any))
          const [stored, storePages] = yield* heapPagesOf(
            storeClaimingUpdates(sql, offered, "cost-term", new Set(offered.map((u) => u.update_id)))
          )
          assert.deepStrictEqual([...stored.claimed].sort((a, b) => a - b), [
            400_000,
            400_001,
            400_002,
            400_003,
            400_004
          ])
          assert.strictEqual(stored.fresh.size, 6)
          // Each statement below read its way through the backlog before (a partial index of pending or
          // processing rows, or hashed subplans). Measured: the INSERT 788 heap pages (with 1,500 rows of each),
          // the claim 397 here against 230 now (its window of 256 pending rows and the 400 processing ones are
          // read either way), the finish 856 against 14.
          assert.isBelow(storePages, 50, `heap pages read by one INSERT that claims: ${storePages}`)

          // A claim: its window of pending rows and the processing ones, then the UPDATE by primary key.
          const [claimed, claimPages] = yield* heapPagesOf(claim(sql, "cost-term", 8, CLAIMS_PER_CHAT))
          assert.strictEqual(claimed.length, 8)
          assert.isBelow(claimPages, 320, `heap pages read by one claim: ${claimPages}`)

          // A finish of three processing rows.
          const [finished, finishPages] = yield* heapPagesOf(
            complete(sql, "cost-term", claimed.slice(0, 3).map((u) => u.updateId))
          )
          assert.strictEqual(finished.size, 3)
          assert.isBelow(finishPages, 50, `heap pages read by one finish: ${finishPages}`)
        })
      ))

    it.effect(`a claim looks at the earliest ${CLAIM_WINDOW} pending rows only`, () =>
      Effect.gen(function*() {
        const sql = yield* SqlClient
        const inbox = yield* Inbox
        yield* sql`DELETE FROM telegram_updates`
        // One chat's backlog fills the window; a chat behind it waits until the window moves.
        const backlog = Array.from({ length: CLAIM_WINDOW }, (_, i) => message(100_000 + i, 88))
        yield* storeUpdates(sql, backlog as any)
        yield* inbox.store([message(200_000, 89)] as any)
        const first = yield* inbox.claim("window-term", 64)
        assert.deepStrictEqual(first.map((u) => u.updateId), [100_000, 100_001, 100_002, 100_003])
        // Those four are no longer pending, so the window now reaches chat 89.
        const second = yield* inbox.claim("window-term", 64)
        assert.deepStrictEqual(second.map((u) => u.updateId), [200_000])
        yield* sql`DELETE FROM telegram_updates`
      }))
  })
})

describe("the store announcer", () => {
  it.live("a store is announced at once; a burst right after it once more, after the spacing", () =>
    Effect.gen(function*() {
      const notified: Array<number> = []
      const announce = yield* makeAnnouncer(Effect.sync(() => void notified.push(performance.now())))
      const awaitNotified = (n: number) =>
        Effect.gen(function*() {
          for (let i = 0; i < 1_000 && notified.length < n; i++) {
            yield* Effect.promise(() => new Promise((resolve) => setTimeout(resolve, 1)))
          }
          assert.strictEqual(notified.length, n)
        })
      yield* announce
      yield* awaitNotified(1)
      // While that NOTIFY's pause runs: one more waits, the rest are dropped.
      for (let i = 0; i < 50; i++) yield* announce
      yield* awaitNotified(2)
      assert.isAtLeast(notified[1]! - notified[0]!, ANNOUNCE_SPACING_MS - 1, "the second NOTIFY waited")
      // A later store, after a quiet spell, is announced again.
      yield* announce
      yield* awaitNotified(3)
    }).pipe(Effect.scoped))
})
