import { assert, layer } from "@effect/vitest"
import { PgClient } from "@effect/sql-pg"
import { Deferred, Effect, Fiber, Queue, Schema } from "effect"
import { SqlClient } from "effect/sql/SqlClient"
import { TestClock } from "effect/testing"
import { workerFor } from "../src/dispatch/ChatRouting.ts"
import { DISPATCH_SWEEP_INTERVAL } from "../src/dispatch/Claiming.ts"
import * as Dispatcher from "../src/dispatch/Dispatcher.ts"
import { finishSettleTimeout, handBackTimeout } from "../src/dispatch/Drain.ts"
import { CHANNEL } from "../src/inbox/Inbox.ts"
import { type FinishWrite, UpdateHandler } from "../src/dispatch/UpdateHandler.ts"
import { Telegram } from "../src/telegram/Telegram.ts"
import * as FakeTelegram from "./fakes/FakeTelegram.ts"
import { makeLogCapture } from "./support/LogCapture.ts"
import {
  becomeLeader,
  clearInbox,
  fail,
  makeRecordingHandler,
  message,
  PipelineLive,
  rowOf,
  rows,
  store,
  within
} from "./support/Pipeline.ts"

const WORKERS = 4
const env = { WORKERS: String(WORKERS), UPDATE_MAX_ATTEMPTS: "3", SHUTDOWN_TIMEOUT_MS: "2000" }

/** Chat ids that land on the given worker (the routing is a pure function). */
const chatsOnWorker = (worker: number, count: number, from = 1) => {
  const found: Array<number> = []
  for (let id = from; found.length < count; id++) {
    if (workerFor(String(id), WORKERS) === worker) found.push(id)
  }
  return found
}

/**
 * Counts rows a claim statement takes (`pending` → `processing`) from now on,
 * with a row trigger the test's scope drops again; rows claimed by the INSERT
 * that stores them are never `pending`, so they are not counted.
 */
const countClaimStatementRows = Effect.gen(function*() {
  const sql = yield* SqlClient
  yield* sql`CREATE SEQUENCE IF NOT EXISTS dispatcher_claimed_rows`
  yield* sql`ALTER SEQUENCE dispatcher_claimed_rows RESTART`
  yield* sql.unsafe(`
    CREATE OR REPLACE FUNCTION count_dispatcher_claim() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN PERFORM nextval('dispatcher_claimed_rows'); RETURN NEW; END $$`)
  yield* sql.unsafe(`
    CREATE OR REPLACE TRIGGER count_dispatcher_claim BEFORE UPDATE ON telegram_updates
    FOR EACH ROW WHEN (OLD.status = 'pending' AND NEW.status = 'processing')
    EXECUTE FUNCTION count_dispatcher_claim()`)
  yield* Effect.addFinalizer(() =>
    Effect.ignore(sql`DROP TRIGGER IF EXISTS count_dispatcher_claim ON telegram_updates`)
  )
  return Effect.gen(function*() {
    const [row] = yield* sql<{ last_value: string; is_called: boolean }>`
      SELECT last_value::text, is_called FROM dispatcher_claimed_rows`
    return row!.is_called ? Number(row!.last_value) : 0
  })
})

let nextId = 1_000
const ids = (n: number) => Array.from({ length: n }, () => ++nextId)

/**
 * Until a statement setting rows to `status` (`pending`: a hand-back, `done`: a finish) waits behind a row
 * lock of the test (bounded in count; callers bound it in time).
 */
const waitForLockWaiter = (status: "pending" | "done") =>
  Effect.gen(function*() {
    const sql = yield* SqlClient
    const pattern = `%UPDATE telegram_updates%SET status = '${status}'%`
    for (let round = 0; round < 20_000; round++) {
      const [row] = yield* sql<{ n: number }>`
        SELECT count(*)::int AS n FROM pg_stat_activity
        WHERE datname = current_database() AND wait_event_type = 'Lock' AND query LIKE ${pattern}`
      if (row!.n > 0) return
      yield* Effect.yieldNow
    }
    assert.fail(`no statement setting rows ${status} ever waited for the row lock`)
  })

/** A transaction of the test holding `updateId`'s row (FOR UPDATE) until `release` runs. */
const holdRow = (updateId: number) =>
  Effect.gen(function*() {
    const sql = yield* SqlClient
    const held = yield* Deferred.make<void>()
    const holding = yield* Deferred.make<void>()
    const holder = yield* sql.withTransaction(Effect.gen(function*() {
      yield* sql`SELECT 1 FROM telegram_updates WHERE update_id = ${updateId} FOR UPDATE`
      yield* Deferred.succeed(holding, undefined)
      yield* Deferred.await(held)
    })).pipe(Effect.forkChild)
    yield* Deferred.await(holding)
    return { release: Effect.andThen(Deferred.succeed(held, undefined), Fiber.join(holder)) }
  })

/**
 * An emptied inbox, `updates` stored (all in one chat), and a leader (logs
 * captured) whose handler of the first of them never ends, once that run started.
 */
const leaderStuckOnFirst = (...updates: ReadonlyArray<Record<string, unknown> & { readonly update_id: number }>) =>
  Effect.gen(function*() {
    yield* clearInbox
    const stuck = updates[0]!.update_id
    const recorder = yield* makeRecordingHandler
    const logs = makeLogCapture()
    recorder.script(stuck, () => Effect.never)
    yield* store(...updates)
    const leader = yield* becomeLeader(Dispatcher.layer, recorder.handler).pipe(Effect.provide(logs.layer))
    yield* recorder.awaitEvents(1, (e) => e.updateId === stuck && e.phase === "start")
    return { leader, logs }
  })

/**
 * An emptied inbox, two updates of `chatId` stored, and a leader (logs captured) whose handler of the first
 * has replied while the test holds its row: the finish waits behind the lock until `holder.release`.
 */
const leaderFinishingBehindLock = (chatId: number) =>
  Effect.gen(function*() {
    const [x, y] = ids(2) as [number, number]
    yield* clearInbox
    const recorder = yield* makeRecordingHandler
    const logs = makeLogCapture()
    const replied = yield* Deferred.make<void>()
    recorder.script(x, () => Deferred.await(replied))
    yield* store(message(x, chatId), message(y, chatId))
    const leader = yield* becomeLeader(Dispatcher.layer, recorder.handler).pipe(Effect.provide(logs.layer))
    yield* recorder.awaitEvents(1, (e) => e.updateId === x && e.phase === "start")
    const holder = yield* holdRow(x)
    yield* Deferred.succeed(replied, undefined)
    yield* within(10_000, waitForLockWaiter("done"))
    return { holder, leader, logs, recorder, x, y }
  })

layer(PipelineLive(env), { timeout: "120 seconds" })("Dispatcher", (it) => {
  it.effect.prop(
    "random interleavings from many chats: every update handled once, each chat in update_id order",
    {
      // Which chat sends each consecutive update, and how the stream is cut into stores.
      senders: Schema.Array(Schema.Int.check(Schema.isBetween({ minimum: 0, maximum: 11 }))).check(
        Schema.isMinLength(1),
        Schema.isMaxLength(80)
      ),
      cuts: Schema.Array(Schema.Int.check(Schema.isBetween({ minimum: 1, maximum: 9 }))).check(Schema.isMinLength(1))
    },
    ({ cuts, senders }) =>
      Effect.gen(function*() {
        yield* clearInbox
        const sql = yield* SqlClient
        const base = nextId
        nextId += senders.length + 1
        const updates = senders.map((sender, i) => message(base + i + 1, 50_000 + sender))
        const recorder = yield* makeRecordingHandler
        // Each handler does real I/O, so runs of different chats interleave.
        for (const update of updates) {
          recorder.script(
            update.update_id,
            () => Effect.orDie(sql`SELECT 1`).pipe(Effect.repeat({ times: update.update_id % 3 }))
          )
        }
        // Half is stored before the leader starts (backlog), the rest while it runs (NOTIFY path).
        const half = Math.floor(updates.length / 2)
        yield* store(...updates.slice(0, half))
        const leader = yield* becomeLeader(Dispatcher.layer, recorder.handler)
        let at = half
        for (let i = 0; at < updates.length; i++) {
          const size = cuts[i % cuts.length]!
          yield* store(...updates.slice(at, at + size))
          at += size
        }
        const ended = yield* recorder.awaitEnded(updates.map((u) => u.update_id))
        assert.strictEqual(ended.length, updates.length, "each update handled exactly once")
        const byChat = new Map<number, Array<number>>()
        for (const event of ended) byChat.set(event.chatId!, [...(byChat.get(event.chatId!) ?? []), event.updateId])
        for (const [chat, order] of byChat) {
          assert.deepStrictEqual(order, [...order].sort((a, b) => a - b), `chat ${chat} out of order`)
        }
        // No chat ever had two runs at once.
        const running = new Set<number>()
        for (const event of recorder.history()) {
          if (event.phase === "start") {
            assert.isFalse(running.has(event.chatId!), `two runs of chat ${event.chatId} at once`)
            running.add(event.chatId!)
          } else running.delete(event.chatId!)
        }
        // A graceful release waits for running bookkeeping: every row is final afterwards.
        yield* leader.release
        const all = yield* rows
        assert.strictEqual(all.length, updates.length)
        assert.isTrue(all.every((r) => r.status === "done" && r.attempts === 1))
      }),
    { timeout: 120_000, arbitrary: { runs: 12 } }
  )

  it.effect("the ACTIVE instance's own stores: claimed by their INSERT if nothing of their chat is unfinished, else woken in memory; no NOTIFY", () =>
    Effect.gen(function*() {
      yield* clearInbox
      const pg = yield* PgClient.PgClient
      const sql = yield* SqlClient
      const notifications = yield* pg.listen(CHANNEL)
      const claimStatementRows = yield* countClaimStatementRows
      const [chatA] = chatsOnWorker(0, 1, 63_001)
      const [chatC] = chatsOnWorker(1, 1, 63_001)
      const [a, b, c, d] = ids(4)
      const recorder = yield* makeRecordingHandler
      const aGoes = yield* Deferred.make<void>()
      recorder.script(a!, () => Deferred.await(aGoes))
      const leader = yield* becomeLeader(Dispatcher.layer, recorder.handler)
      // The TestClock stands still, so no sweep: only the INSERT or a wake-up can bring an update to its handler.
      yield* store(message(a!, chatA!))
      yield* recorder.awaitEvents(1, (e) => e.updateId === a && e.phase === "start")
      // b, in a's chat while a runs: stored pending, woken in memory, claimed behind a.
      yield* store(message(b!, chatA!))
      // c, in a chat of its own (another worker): claimed by its INSERT, runs beside a.
      yield* store(message(c!, chatC!))
      yield* recorder.awaitEnded([c!])
      yield* Deferred.succeed(aGoes, undefined)
      yield* recorder.awaitEnded([a!, b!])
      const ofChatA = recorder.ended().filter((e) => e.chatId === chatA).map((e) => e.updateId)
      assert.deepStrictEqual(ofChatA, [a, b], "the chat's order")
      assert.strictEqual(yield* claimStatementRows, 1, "only b needed a claim statement")

      yield* sql`SELECT pg_notify(${CHANNEL}, 'marker')`
      const first = yield* within(10_000, Queue.take(notifications))
      assert.strictEqual(first.payload, "marker", "the leader's own stores sent no NOTIFY")
      // A graceful release waits for running bookkeeping: every row is final afterwards.
      yield* leader.release
      const all = yield* rows
      assert.deepStrictEqual(all.map((r) => [r.update_id, r.status, r.attempts]), [
        [a, "done", 1],
        [b, "done", 1],
        [c, "done", 1]
      ])
      // PASSIVE (no dispatcher here): a store is pending and announced to whichever instance leads.
      yield* store(message(d!, chatC!))
      const announced = yield* within(10_000, Queue.take(notifications))
      assert.strictEqual(announced.payload, "")
      assert.strictEqual((yield* rowOf(d!))?.status, "pending")
    }))

  it.effect("chats on different workers run in parallel; one worker runs one handler at a time", () =>
    Effect.gen(function*() {
      yield* clearInbox
      const [chatA] = chatsOnWorker(0, 1)
      const [chatB] = chatsOnWorker(1, 1)
      const [chatC] = chatsOnWorker(0, 1, chatA! + 1)
      const [a, b, c] = ids(3)
      const recorder = yield* makeRecordingHandler
      const bStarted = yield* Deferred.make<void>()
      // A finishes only once B has started: impossible unless they run in parallel.
      recorder.script(a!, () => Deferred.await(bStarted))
      recorder.script(b!, () => Deferred.succeed(bStarted, undefined))
      yield* store(message(a!, chatA!), message(b!, chatB!), message(c!, chatC!))
      yield* becomeLeader(Dispatcher.layer, recorder.handler)
      yield* recorder.awaitEnded([a!, b!, c!])
      const history = recorder.history()
      const index = (id: number, phase: string) => history.findIndex((e) => e.updateId === id && e.phase === phase)
      assert.isBelow(index(b!, "start"), index(a!, "end"), "B ran while A was running")
      assert.isAbove(index(c!, "start"), index(a!, "end"), "C (same worker as A) waited for A")
    }))

  it.effect("a failing update is retried with backoff on the clock and blocks only its own chat", () =>
    Effect.gen(function*() {
      yield* clearInbox
      const [chatA, chatB] = chatsOnWorker(2, 2)
      const [x, y, z] = ids(3)
      const recorder = yield* makeRecordingHandler
      const logs = makeLogCapture()
      recorder.script(x!, (context) => (context.attempt < 3 ? fail(`boom ${context.attempt}`) : Effect.void))
      yield* store(message(x!, chatA!), message(y!, chatA!))
      const leader = yield* becomeLeader(Dispatcher.layer, recorder.handler).pipe(Effect.provide(logs.layer))

      yield* logs.awaitLine((l) =>
        l.message.includes(`update ${x} failed (run 1 of 3): `) && l.message.includes("boom 1")
      )
      yield* logs.awaitLine((l) => l.message.includes(`update ${x}: run 2 in`))
      // Chat B shares A's worker, yet goes on while A waits out the backoff.
      yield* store(message(z!, chatB!))
      yield* recorder.awaitEnded([z!])
      assert.isUndefined(recorder.history().find((e) => e.updateId === y), "A's later update waits")
      assert.strictEqual((yield* rowOf(x!))?.last_error, "UpdateHandlerError: boom 1")
      yield* TestClock.adjust("1200 millis")
      yield* logs.awaitLine((l) => l.message.includes(`update ${x}: run 3 in`))
      assert.isUndefined(recorder.history().find((e) => e.updateId === y))
      yield* TestClock.adjust("2400 millis")
      yield* recorder.awaitEnded([x!, y!])
      const ended = recorder.ended().map((e) => e.updateId)
      assert.isBelow(ended.indexOf(x!), ended.indexOf(y!))
      yield* leader.release // waits for the bookkeeping of finished runs
      const row = yield* rowOf(x!)
      assert.strictEqual(row?.status, "done")
      assert.strictEqual(row?.attempts, 3)
      assert.deepStrictEqual(
        recorder.history().filter((e) => e.updateId === x && e.phase === "start").map((e) => e.attempt),
        [1, 2, 3]
      )
    }))

  it.effect("after UPDATE_MAX_ATTEMPTS runs the update is dead with its error, and the chat goes on", () =>
    Effect.gen(function*() {
      yield* clearInbox
      const [x, y] = ids(2)
      const recorder = yield* makeRecordingHandler
      const logs = makeLogCapture()
      recorder.script(x!, () => Effect.die(new Error("handler bug")))
      yield* store(message(x!, 71), message(y!, 71))
      const leader = yield* becomeLeader(Dispatcher.layer, recorder.handler).pipe(Effect.provide(logs.layer))
      for (const run of [2, 3]) {
        yield* logs.awaitLine((l) => l.message.includes(`update ${x}: run ${run} in`))
        yield* TestClock.adjust("10 seconds")
      }
      yield* logs.awaitLine((l) => l.message.includes(`update ${x} dead after 3 runs`))
      yield* recorder.awaitEnded([y!])
      yield* leader.release
      const row = yield* rowOf(x!)
      assert.strictEqual(row?.status, "dead")
      assert.strictEqual(row?.attempts, 3)
      assert.include(row?.last_error ?? "", "handler bug")
      assert.strictEqual((yield* rowOf(y!))?.status, "done")
    }))

  it.effect("a handler running past UPDATE_HANDLER_TIMEOUT_MS counts as a failed run", () =>
    Effect.gen(function*() {
      yield* clearInbox
      const [x] = ids(1)
      const recorder = yield* makeRecordingHandler
      const logs = makeLogCapture()
      recorder.script(x!, (context) => (context.attempt === 1 ? Effect.never : Effect.void))
      yield* store(message(x!, 72))
      const leader = yield* becomeLeader(Dispatcher.layer, recorder.handler).pipe(Effect.provide(logs.layer))
      yield* recorder.awaitEvents(1, (e) => e.updateId === x && e.phase === "start")
      yield* TestClock.adjust("60 seconds")
      yield* logs.awaitLine((l) => l.message.includes(`update ${x} failed (run 1 of 3): handler timed out`))
      yield* logs.awaitLine((l) => l.message.includes(`update ${x}: run 2 in`))
      yield* TestClock.adjust("2 seconds")
      yield* recorder.awaitEnded([x!])
      yield* leader.release
      assert.strictEqual((yield* rowOf(x!))?.status, "done")
    }))

  it.effect("kinds the chat flow does not handle are done without a handler; undecodable ones are dead", () =>
    Effect.gen(function*() {
      yield* clearInbox
      const [edited, poll, broken, after] = ids(4)
      const recorder = yield* makeRecordingHandler
      yield* store(
        { update_id: edited, edited_message: { message_id: 1, date: 0, chat: { id: 73, type: "private" }, text: "x" } },
        { update_id: poll, poll: { id: "p", question: "?" } },
        { update_id: broken, message: { text: 5 } },
        message(after!, 73)
      )
      const leader = yield* becomeLeader(Dispatcher.layer, recorder.handler)
      yield* recorder.awaitEnded([after!])
      yield* leader.release
      assert.deepStrictEqual(recorder.history().map((e) => e.updateId), [after, after])
      const [e, p, b] = [yield* rowOf(edited!), yield* rowOf(poll!), yield* rowOf(broken!)]
      assert.strictEqual(e?.status, "done")
      assert.strictEqual(p?.status, "done")
      assert.strictEqual(b?.status, "dead")
      assert.include(b?.last_error ?? "", "undecodable")
    }))

  it.effect("a reply to the chat being handled skips the blocked-chat lookup; the bot's own sends keep it", () =>
    Effect.gen(function*() {
      yield* clearInbox
      const sql = yield* SqlClient
      const telegram = yield* Telegram
      const fake = yield* FakeTelegram.FakeTelegram
      const [x] = ids(1)
      yield* sql`INSERT INTO telegram_chats (chat_id, blocked_at, blocked_reason, updated_at)
                 VALUES (74, now(), 'Forbidden: bot was blocked by the user', now()),
                        (75, now(), 'Forbidden: bot was blocked by the user', now())`
      const recorder = yield* makeRecordingHandler
      const seen: Array<boolean> = []
      recorder.script(x!, () =>
        Effect.gen(function*() {
          const [row] = yield* Effect.orDie(
            sql<{ b: boolean }>`SELECT blocked_at IS NOT NULL AS b FROM telegram_chats WHERE chat_id = 74`
          )
          seen.push(row!.b)
          // The flag is still set (it is cleared with the finish), yet the reply goes out.
          yield* Effect.orDie(telegram.sendMessage({ chat_id: 74, text: "hello again" }))
        }))
      yield* store(message(x!, 74))
      const leader = yield* becomeLeader(Dispatcher.layer, recorder.handler)
      yield* recorder.awaitEnded([x!])
      assert.deepStrictEqual(seen, [true])
      assert.isDefined(fake.calls("sendMessage").find((c) => Number(c.params.chat_id) === 74))
      // Outside a handler (the engine's deliveries) a flagged chat is skipped without a request.
      const own = yield* Effect.flip(telegram.sendMessage({ chat_id: 75, text: "your picture" }))
      assert.strictEqual(own._tag, "TelegramChatBlocked")
      assert.isUndefined(fake.calls("sendMessage").find((c) => Number(c.params.chat_id) === 75))
      yield* leader.release
    }))

  it.effect("a row stored without a notification is picked up by the periodic sweep", () =>
    Effect.gen(function*() {
      yield* clearInbox
      const sql = yield* SqlClient
      const [x] = ids(1)
      const recorder = yield* makeRecordingHandler
      const logs = makeLogCapture()
      yield* becomeLeader(Dispatcher.layer, recorder.handler).pipe(Effect.provide(logs.layer))
      // Wait until the dispatcher listens and went idle after the claim LISTEN triggered,
      // so only the sweep timer can find the row.
      yield* logs.awaitLine((l) => l.message === "[DISPATCH] listening on telegram_updates")
      const listening = logs.lines().findIndex((l) => l.message === "[DISPATCH] listening on telegram_updates")
      yield* logs.awaitLine((l) => l.message === "[DISPATCH] waiting for work", { after: listening + 1 })
      yield* sql`INSERT INTO telegram_updates (update_id, chat_id, kind, payload, received_at)
                 VALUES (${x!}, 75, 'message', ${JSON.stringify(message(x!, 75))}::jsonb, now())`
      yield* TestClock.adjust(DISPATCH_SWEEP_INTERVAL)
      yield* recorder.awaitEnded([x!])
      // Only a claim woken by the sweep timer (not by a notification) logs this.
      yield* logs.awaitLine((l) => l.message === "[DISPATCH] sweep found 1 update(s) no notification announced")
    }))

  it.effect("a lost LISTEN connection is re-established, and what it missed is claimed right after", () =>
    Effect.gen(function*() {
      yield* clearInbox
      const sql = yield* SqlClient
      const [x] = ids(1)
      const recorder = yield* makeRecordingHandler
      const logs = makeLogCapture()
      yield* becomeLeader(Dispatcher.layer, recorder.handler).pipe(Effect.provide(logs.layer))
      yield* logs.awaitLine((l) => l.message === "[DISPATCH] listening on telegram_updates")
      const killed = yield* sql<{ pid: number }>`
        SELECT pid FROM pg_stat_activity
        WHERE datname = current_database() AND query ILIKE 'LISTEN%' AND pid <> pg_backend_pid()`
      assert.lengthOf(killed, 1, "one LISTEN connection")
      yield* sql`SELECT pg_terminate_backend(${killed[0]!.pid})`
      yield* logs.awaitLine((l) => l.message.startsWith("[DISPATCH] LISTEN telegram_updates failed, reconnecting"))
      // Stored while nobody listens: its notification is lost.
      yield* store(message(x!, 78))
      yield* TestClock.adjust("1 second")
      yield* logs.awaitLine((l) => l.message === "[DISPATCH] listening on telegram_updates again")
      yield* recorder.awaitEnded([x!])
      assert.isUndefined(logs.lines().find((l) => l.message.includes("sweep found")), "not the 5 s sweep")
    }))

  it.effect("graceful release: the running handler finishes, queued updates go back to pending unstarted", () =>
    Effect.gen(function*() {
      yield* clearInbox
      const [chatA, chatB] = chatsOnWorker(3, 2)
      const [x, y, z] = ids(3)
      const recorder = yield* makeRecordingHandler
      const logs = makeLogCapture()
      const gate = yield* Deferred.make<void>()
      recorder.script(x!, () => Deferred.await(gate))
      yield* store(message(x!, chatA!), message(y!, chatA!), message(z!, chatB!))
      const leader = yield* becomeLeader(Dispatcher.layer, recorder.handler).pipe(Effect.provide(logs.layer))
      yield* recorder.awaitEvents(1, (e) => e.updateId === x && e.phase === "start")
      const releasing = yield* leader.release.pipe(Effect.provide(logs.layer), Effect.forkChild)
      yield* logs.awaitLine((l) => l.message.includes("draining: waiting for 1 running handler(s)"))
      yield* Deferred.succeed(gate, undefined)
      yield* within(10_000, Fiber.join(releasing))
      assert.deepStrictEqual(recorder.ended().map((e) => e.updateId), [x])
      assert.strictEqual((yield* rowOf(x!))?.status, "done")
      for (const id of [y!, z!]) {
        const row = yield* rowOf(id)
        assert.strictEqual(row?.status, "pending")
        assert.strictEqual(row?.attempts, 0, "a claim that never ran is not an attempt")
        assert.isNull(row?.claimed_by)
      }
      for (let n = 0; n < WORKERS; n++) {
        assert.isDefined(logs.lines().find((l) => l.message === `[WORKER_${n}] ✅ ACTIVE_ENTER active=True`))
        assert.isDefined(
          logs.lines().find((l) => l.message === `[WORKER_${n}] ⏹ ACTIVE_EXIT active=False reason=released`)
        )
      }
    }))

  it.effect("graceful release is bounded by SHUTDOWN_TIMEOUT_MS: a stuck handler is interrupted and released", () =>
    Effect.gen(function*() {
      const [x] = ids(1)
      const { leader, logs } = yield* leaderStuckOnFirst(message(x!, 76))
      const releasing = yield* leader.release.pipe(Effect.provide(logs.layer), Effect.forkChild)
      yield* logs.awaitLine((l) => l.message.includes("draining"))
      yield* TestClock.adjust("2 seconds")
      yield* within(10_000, Fiber.join(releasing))
      const row = yield* rowOf(x!)
      assert.strictEqual(row?.status, "pending")
      assert.strictEqual(row?.attempts, 1, "the interrupted run counts")
    }))

  it.effect("leadership lost: stops at once without draining, then hands its rows back and NOTIFYs", () =>
    Effect.gen(function*() {
      const [x, y] = ids(2)
      const { leader, logs } = yield* leaderStuckOnFirst(message(x!, 77), message(y!, 77))
      const notifications = yield* (yield* PgClient.PgClient).listen(CHANNEL)
      // The clock stands still: nothing waits for SHUTDOWN_TIMEOUT_MS.
      yield* within(5_000, leader.lose.pipe(Effect.provide(logs.layer)))
      const all = yield* rows
      assert.deepStrictEqual(
        all.map((r) => [r.update_id, r.status, r.attempts, r.claimed_by]),
        [[x, "pending", 1, null], [y, "pending", 0, null]],
        "x's run counts, y's claim is given back"
      )
      const heard = yield* within(10_000, Queue.take(notifications))
      assert.strictEqual(heard.channel, CHANNEL, "whichever instance is ACTIVE now is told")
      assert.isDefined(logs.lines().find((l) => l.message.includes("reason=leadership_lost")))
      assert.isDefined(
        logs.lines().find((l) => l.message === "[DISPATCH] handed 2 unfinished update(s) back to pending")
      )
      assert.isUndefined(logs.lines().find((l) => l.message.includes("draining")))
    }))

  it.effect("leadership lost and the database does not answer: the hand-back gives up after handBackTimeout", () =>
    Effect.gen(function*() {
      const [x] = ids(1)
      const { leader, logs } = yield* leaderStuckOnFirst(message(x!, 78))
      // Another session holds x's row, so the hand-back waits as it would on a database that went silent.
      const holder = yield* holdRow(x!)
      const losing = yield* leader.lose.pipe(Effect.provide(logs.layer), Effect.forkChild)
      yield* within(10_000, waitForLockWaiter("pending"))
      yield* TestClock.adjust(handBackTimeout)
      yield* within(10_000, Fiber.join(losing))
      yield* holder.release
      const row = yield* rowOf(x!)
      assert.strictEqual(row?.status, "processing", "left to the next leader's reconciler")
      assert.isNotNull(row?.claimed_by)
      assert.isDefined(
        logs.lines().find((l) => l.message.startsWith("[DISPATCH] could not hand unfinished updates back"))
      )
    }))

  it.effect("leadership lost while a handled update's finish is on its way: the finish commits (no second answer), the rest goes back", () =>
    Effect.gen(function*() {
      const { holder, leader, logs, recorder, x, y } = yield* leaderFinishingBehindLock(79)
      const losing = yield* leader.lose.pipe(Effect.provide(logs.layer), Effect.forkChild)
      yield* holder.release
      // The clock stands still: the finish commits on its own, not past a timeout.
      yield* within(10_000, Fiber.join(losing))
      const all = yield* rows
      assert.deepStrictEqual(
        all.map((r) => [r.update_id, r.status, r.attempts]),
        [[x, "done", 1], [y, "pending", 0]],
        "x stays answered once; y, never started, goes back with its claim's attempt"
      )
      assert.deepStrictEqual(recorder.ended().map((e) => e.updateId), [x])
      assert.isDefined(
        logs.lines().find((l) => l.message === "[DISPATCH] handed 1 unfinished update(s) back to pending")
      )
      assert.isUndefined(logs.lines().find((l) => l.message.includes("did not commit within")))
    }))

  it.effect("leadership lost while a finish cannot commit: it is given up after finishSettleTimeout, and its update goes back", () =>
    Effect.gen(function*() {
      const { holder, leader, logs, x, y } = yield* leaderFinishingBehindLock(80)
      const losing = yield* leader.lose.pipe(Effect.provide(logs.layer), Effect.forkChild)
      // The clock moves a second at a time until the settle gives up (it starts once the fibers stopped); the
      // hand-back after it has twice as long, so one step too many still leaves it waiting for the row lock.
      const gaveUp = (l: { readonly message: string }) => l.message.includes("did not commit within 1s")
      for (let step = 0; step < 100 && logs.lines().find(gaveUp) === undefined; step++) {
        yield* TestClock.adjust(finishSettleTimeout)
        yield* Effect.ignore(logs.awaitLine(gaveUp, { timeoutMs: 100 }))
      }
      assert.isDefined(logs.lines().find(gaveUp))
      yield* holder.release
      yield* within(10_000, Fiber.join(losing))
      const all = yield* rows
      assert.deepStrictEqual(
        all.map((r) => [r.update_id, r.status, r.attempts]),
        [[x, "pending", 1], [y, "pending", 0]],
        "x's finish was rolled back: the next leader answers it again"
      )
    }))

  it.effect("an update clears its chat's blocked flag if it was set before the update arrived; a 403 meanwhile stays", () =>
    Effect.gen(function*() {
      yield* clearInbox
      const sql = yield* SqlClient
      const [a, b] = ids(2)
      const chatA = 61_001
      const chatB = 61_002
      yield* store(message(a!, chatA), message(b!, chatB))
      // Chat A blocked the bot long before writing again; chat B blocks it while its update is handled.
      const blockAt = (chatId: number, updateId: number, offset: string) =>
        Effect.orDie(sql`
          INSERT INTO telegram_chats (chat_id, blocked_at, blocked_reason, updated_at)
          SELECT ${chatId}, received_at + ${offset}::interval, 'Forbidden: bot was blocked by the user', received_at
          FROM telegram_updates WHERE update_id = ${updateId}
          ON CONFLICT (chat_id) DO UPDATE SET blocked_at = EXCLUDED.blocked_at`)
      yield* blockAt(chatA, a!, "-1 hour")
      const recorder = yield* makeRecordingHandler
      recorder.script(b!, () => blockAt(chatB, b!, "1 second"))
      const leader = yield* becomeLeader(Dispatcher.layer, recorder.handler)
      yield* recorder.awaitEnded([a!, b!])
      yield* leader.release
      const flags = yield* sql<{ chat_id: bigint; blocked: boolean }>`
        SELECT chat_id, blocked_at IS NOT NULL AS blocked FROM telegram_chats
        WHERE chat_id IN (${chatA}, ${chatB}) ORDER BY chat_id`
      assert.deepStrictEqual(flags.map((f) => [Number(f.chat_id), f.blocked]), [[chatA, false], [chatB, true]])
      assert.deepStrictEqual((yield* rows).map((r) => r.status), ["done", "done"])
    }))

  it.effect("a finish and its handler's write commit together, only while the term owns the update; an unwritable one is dead", () =>
    Effect.gen(function*() {
      yield* clearInbox
      const sql = yield* SqlClient
      yield* sql`CREATE TABLE IF NOT EXISTS finish_marks (mark bigint NOT NULL)`
      const [kept, broken, stolen] = ids(3)
      const brokenTried = yield* Deferred.make<void>()
      // Each run leaves a mark to write with its finish; `broken`'s cannot be written (NOT NULL),
      // and `stolen` is taken over by another term while its handler runs.
      const handler = UpdateHandler.of({
        handle: (_update, context) =>
          Effect.gen(function*() {
            if (context.updateId === stolen) {
              yield* Effect.orDie(
                sql`UPDATE telegram_updates SET claimed_by = 'another term' WHERE update_id = ${stolen}`
              )
            }
            const write: MarkWrite = {
              updateId: context.updateId,
              mark: context.updateId === broken ? null : context.updateId
            }
            return write
          }),
        writeFinished: (writes) => {
          const marks = JSON.stringify(writes.filter(isMarkWrite).map((write) => write.mark))
          return sql`INSERT INTO finish_marks (mark) SELECT (m #>> '{}')::bigint FROM jsonb_array_elements(${marks}::jsonb) m`
            .pipe(
              Effect.asVoid,
              Effect.tapError(() =>
                writes.some((write) => write.updateId === broken)
                  ? Deferred.succeed(brokenTried, undefined)
                  : Effect.void
              )
            )
        }
      })
      yield* store(message(kept!, 62_001), message(broken!, 62_002), message(stolen!, 62_003))
      const leader = yield* becomeLeader(Dispatcher.layer, handler)
      yield* within(10_000, Deferred.await(brokenTried))
      yield* within(
        10_000,
        Effect.gen(function*() {
          while ((yield* rowOf(kept!))?.status !== "done") yield* Effect.promise(() => sleepReal(20))
        })
      )
      // The broken write rolled its finish back and, since no retry can store it, the update is dead
      // (its chat goes on); the stolen update's term wrote neither.
      yield* within(
        10_000,
        Effect.gen(function*() {
          while ((yield* rowOf(broken!))?.status !== "dead") yield* Effect.promise(() => sleepReal(20))
        })
      )
      const byId = new Map((yield* rows).map((row) => [row.update_id, row]))
      assert.include(byId.get(broken!)?.last_error ?? "", "state could not be saved")
      assert.strictEqual(byId.get(stolen!)?.status, "processing")
      assert.strictEqual(byId.get(stolen!)?.claimed_by, "another term")
      const marks = yield* sql<{ mark: string }>`SELECT mark::text AS mark FROM finish_marks ORDER BY mark`
      assert.deepStrictEqual(marks.map((m) => Number(m.mark)), [kept!])
      yield* leader.lose
    }))
})

/** The test's `FinishWrite`: a mark to insert with the finish (`null` cannot be). */
interface MarkWrite extends FinishWrite {
  readonly mark: number | null
}
const isMarkWrite = (write: FinishWrite): write is MarkWrite => "mark" in write

/** A real-time pause while polling the database (time in the test itself comes from TestClock). */
const sleepReal = (millis: number) => new Promise((resolve) => setTimeout(resolve, millis))
