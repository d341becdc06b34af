import { assert, layer } from "@effect/vitest"
import { Duration, Effect, Layer, Schedule, Schema } from "effect"
import { SqlClient } from "effect/sql/SqlClient"
import { TestClock } from "effect/testing"
import { LeaderTerm } from "../src/leadership/LeaderTerm.ts"
import * as Reconciler from "../src/inbox/Reconciler.ts"
import { makeLogCapture } from "./support/LogCapture.ts"
import { becomeLeader, clearInbox, makeRecordingHandler, message, PipelineLive, rows } from "./support/Pipeline.ts"
import { connectedAs } from "./support/TestDatabase.ts"

const STUCK_MS = 90_000
const ORPHAN_MS = 60_000
const env = {
  STUCK_UPDATE_THRESHOLD_MS: String(STUCK_MS),
  ORPHAN_UPDATE_THRESHOLD_MS: String(ORPHAN_MS),
  RECONCILE_INTERVAL_MS: "61000",
  INBOX_RETENTION_HOURS: "48"
}

const THIS_TERM = "this-instance/term-now"
/** A term of an instance whose process is still connected (a deposed leader): see `connectedAs`. */
const DEAD_TERM = "other-instance/term-dead"
/** A term of an instance with no connection at all (its process was killed). */
const GONE_TERM = "gone-instance/term-killed"

/** Waits (polling, live, bounded) until backend `pid` has left pg_stat_activity. */
const backendGone = (pid: number) =>
  Effect.gen(function*() {
    const sql = yield* SqlClient
    yield* sql<{ n: number }>`SELECT count(*)::int AS n FROM pg_stat_activity WHERE pid = ${pid}`.pipe(
      Effect.repeat({ until: (rows) => rows[0]!.n === 0, schedule: Schedule.spaced("20 millis") }),
      Effect.timeout("10 seconds"),
      TestClock.withLive
    )
  })

const pad = (n: number, width = 2) => String(Math.abs(n)).padStart(width, "0")
/** `epochMillis` as wall-clock text at `offsetMinutes` from UTC, with or without that offset. */
const timestampText = (epochMillis: number, offsetMinutes: number, naive: boolean) => {
  const d = new Date(epochMillis + (naive ? 0 : offsetMinutes) * 60_000)
  const wall = `${pad(d.getUTCFullYear(), 4)}-${pad(d.getUTCMonth() + 1)}-${pad(d.getUTCDate())} ${
    pad(d.getUTCHours())
  }:${pad(d.getUTCMinutes())}:${pad(d.getUTCSeconds())}.${pad(d.getUTCMilliseconds(), 3)}`
  if (naive) return wall
  const sign = offsetMinutes < 0 ? "-" : "+"
  return `${wall}${sign}${pad(Math.floor(Math.abs(offsetMinutes) / 60))}:${pad(Math.abs(offsetMinutes) % 60)}`
}

const Row = Schema.Struct({
  /** received_at (and claimed_at) relative to the clock: from 3 hours ago to 1 hour ahead (clock skew). */
  offsetMs: Schema.Int.check(Schema.isBetween({ minimum: -3 * 3_600_000, maximum: 3_600_000 })),
  /** The zone of the literal the row was written with… */
  literalOffsetMinutes: Schema.Int.check(Schema.isBetween({ minimum: -720, maximum: 840 })),
  /** …or a naive literal, which means UTC. */
  naive: Schema.Boolean,
  /** The session time zone of the connection that wrote it. */
  sessionZone: Schema.Literals(["UTC", "Asia/Kolkata", "America/New_York", "Pacific/Chatham", "Asia/Kathmandu"]),
  status: Schema.Literals(["pending", "processing-dead-term", "processing-this-term", "done"])
})

let nextId = 10_000

/**
 * Runs one pass with a TestClock of its own set to `clock` (epoch millis).
 * The file's shared TestClock also drives the connection pool's periodic
 * checks, which a jump of decades would replay one by one.
 */
const passAt = <A, E, R>(clock: number, pass: Effect.Effect<A, E, R>) =>
  Effect.gen(function*() {
    yield* TestClock.setTime(clock)
    return yield* pass
  }).pipe(Effect.provide(TestClock.layer()))

layer(PipelineLive(env), { timeout: "120 seconds" })("Reconciler", (it) => {
  it.effect.prop(
    "requeues exactly the rows stuck on another term past the threshold and logs each orphan once, for any clock, zone and timestamp form",
    {
      // 2020-09 … 2033-05
      clock: Schema.Int.check(Schema.isBetween({ minimum: 1_600_000_000_000, maximum: 2_000_000_000_000 })),
      table: Schema.Array(Row).check(Schema.isMinLength(1), Schema.isMaxLength(20))
    },
    ({ clock, table }) =>
      Effect.gen(function*() {
        yield* clearInbox
        yield* connectedAs("other-instance")
        const sql = yield* SqlClient
        const written = table.map((row) => ({ ...row, updateId: ++nextId, instant: clock + row.offsetMs }))
        for (const row of written) {
          const literal = timestampText(row.instant, row.literalOffsetMinutes, row.naive)
          const status = row.status.startsWith("processing") ? "processing" : row.status
          const claimedBy = row.status === "processing-dead-term"
            ? DEAD_TERM
            : row.status === "processing-this-term"
            ? THIS_TERM
            : null
          yield* sql.withTransaction(Effect.gen(function*() {
            yield* sql.unsafe(`SET LOCAL TIME ZONE '${row.sessionZone}'`)
            const at = row.naive ? sql`(${literal}::timestamp AT TIME ZONE 'UTC')` : sql`${literal}::timestamptz`
            yield* sql`
              INSERT INTO telegram_updates (update_id, chat_id, kind, payload, received_at, status, claimed_at, claimed_by, processed_at)
              VALUES (${row.updateId}, 1, 'message', ${
                JSON.stringify(message(row.updateId, 1))
              }::jsonb, ${at}, ${status},
                      ${status === "processing" ? at : null}, ${claimedBy}, ${status === "done" ? at : null})`
          }))
        }
        const reconciler = yield* Reconciler.make.pipe(Effect.provide(Layer.succeed(LeaderTerm, { id: THIS_TERM })))
        const logs = makeLogCapture()
        const first = yield* passAt(clock, reconciler.pass).pipe(Effect.provide(logs.layer))

        const age = (row: (typeof written)[number]) => clock - row.instant
        const expectedRequeued = written
          .filter((row) => row.status === "processing-dead-term" && age(row) > STUCK_MS)
          .map((row) => row.updateId)
        const expectedOrphans = written
          .filter((row) => row.status === "pending" && age(row) > ORPHAN_MS)
          .map((row) => row.updateId)
        assert.deepStrictEqual(first.requeued.map((r) => r.updateId), expectedRequeued)
        assert.deepStrictEqual(
          first.newOrphans.map((o) => o.updateId).sort((a, b) => a - b),
          [...expectedOrphans].sort((a, b) => a - b)
        )
        for (const orphan of first.newOrphans) {
          const row = written.find((r) => r.updateId === orphan.updateId)!
          assert.strictEqual(orphan.ageSeconds, Math.floor(age(row) / 1000))
          assert.isAbove(orphan.ageSeconds, 59)
        }
        for (const requeued of first.requeued) {
          const row = written.find((r) => r.updateId === requeued.updateId)!
          assert.deepStrictEqual(requeued.stuckSeconds._tag, "Some")
          assert.strictEqual((requeued.stuckSeconds as { value: number }).value, Math.floor(age(row) / 1000))
        }
        const orphanLines = logs.lines().filter((l) => l.message.includes("orphan update"))
        assert.strictEqual(orphanLines.length, expectedOrphans.length)
        assert.isTrue(logs.lines().every((l) => !/-\d+ s|NaN/.test(l.message)), "no negative or NaN age in any line")

        // Each orphan is logged once, and a requeued row (reported as such) is not reported again as an orphan.
        const second = yield* passAt(clock, reconciler.pass).pipe(Effect.provide(logs.layer))
        assert.deepStrictEqual(second.requeued, [])
        assert.deepStrictEqual(second.newOrphans, [])
        assert.strictEqual(
          logs.lines().filter((l) => l.message.includes("orphan update")).length,
          expectedOrphans.length
        )

        const after = yield* rows
        for (const row of written) {
          const now = after.find((r) => r.update_id === row.updateId)!
          if (expectedRequeued.includes(row.updateId)) {
            assert.strictEqual(now.status, "pending")
            assert.isNull(now.claimed_by)
          } else if (row.status.startsWith("processing")) {
            assert.strictEqual(now.status, "processing", "this term's rows and fresh claims are left alone")
          }
        }
      }),
    { timeout: 120_000, arbitrary: { runs: 25 } }
  )

  it.effect("runs on the clock: first pass at once, then every RECONCILE_INTERVAL_MS; wakes the dispatcher", () =>
    Effect.gen(function*() {
      yield* clearInbox
      const sql = yield* SqlClient
      const logs = makeLogCapture()
      const id = ++nextId
      yield* TestClock.setTime(0)
      yield* sql`INSERT INTO telegram_updates (update_id, chat_id, kind, payload, received_at)
                 VALUES (${id}, 2, 'message', ${JSON.stringify(message(id, 2))}::jsonb, ${new Date(0)})`
      const recorder = yield* makeRecordingHandler
      yield* becomeLeader(Reconciler.layer, recorder.handler).pipe(Effect.provide(logs.layer))
      yield* logs.awaitLine((l) => l.message.startsWith("[RECONCILE] pass done"))
      assert.isUndefined(logs.lines().find((l) => l.message.includes("orphan update")), "age 0 is no orphan")
      const afterFirst = logs.mark()
      yield* TestClock.adjust("61 seconds")
      yield* logs.awaitLine((l) => l.message.startsWith("[RECONCILE] pass done"), { after: afterFirst })
      const orphan = logs.lines().filter((l) => l.message.includes(`orphan update ${id} (chat 2) pending for 61 s`))
      assert.lengthOf(orphan, 1)
      const afterSecond = logs.mark()
      yield* TestClock.adjust("61 seconds")
      yield* logs.awaitLine((l) => l.message.startsWith("[RECONCILE] pass done"), { after: afterSecond })
      assert.lengthOf(logs.lines().filter((l) => l.message.includes(`orphan update ${id}`)), 1, "logged once")
    }))

  it.effect("a term DEPOSED_TERM_GRACE old takes back rows claimed before it began, threshold or not", () =>
    Effect.gen(function*() {
      yield* clearInbox
      // The old leader's process is still connected: only the grace tells that it has stopped its handlers.
      yield* connectedAs("other-instance")
      const sql = yield* SqlClient
      const termStart = Date.UTC(2031, 4, 1)
      const [crashed, crashedOtherChat, zombie] = [++nextId, ++nextId, ++nextId]
      const insert = (
        id: number,
        chatId: number,
        claimedAt: number
      ) => sql`INSERT INTO telegram_updates (update_id, chat_id, kind, payload, received_at, status, claimed_at, claimed_by)
            VALUES (${id}, ${chatId}, 'message', ${JSON.stringify(message(id, chatId))}::jsonb, ${new Date(
              claimedAt - 100
            )},
                    'processing', ${new Date(claimedAt)}, ${DEAD_TERM})`
      // Claimed by the crashed leader 2 s before this term took the lock.
      yield* insert(crashed, 5, termStart - 2_000)
      yield* insert(crashedOtherChat, 6, termStart - 1_000)
      // Claimed by another term after this one began: a deposed leader still running, left to the threshold.
      yield* insert(zombie, 7, termStart + 1_000)
      const reconciler = yield* passAt(
        termStart,
        Reconciler.make.pipe(Effect.provide(Layer.succeed(LeaderTerm, { id: THIS_TERM })))
      )
      const graceMs = Duration.toMillis(Reconciler.DEPOSED_TERM_GRACE)
      const early = yield* passAt(termStart + graceMs - 1, reconciler.pass)
      assert.deepStrictEqual(early.requeued, [], "too early: the old leader may still be stopping")

      const logs = makeLogCapture()
      const atGrace = yield* passAt(termStart + graceMs, reconciler.pass).pipe(Effect.provide(logs.layer))
      assert.deepStrictEqual(atGrace.requeued.map((r) => r.updateId), [crashed, crashedOtherChat])
      assert.isDefined(
        logs.lines().find((l) => l.message.startsWith(`[RECONCILE] update ${crashed} was stuck in processing for 17 s`))
      )
      const after = yield* rows
      assert.deepStrictEqual(
        after.map((r) => [r.update_id, r.status]),
        [[crashed, "pending"], [crashedOtherChat, "pending"], [zombie, "processing"]]
      )

      // The zombie's row still comes back by the threshold.
      const late = yield* passAt(termStart + 1_000 + STUCK_MS + 1, reconciler.pass)
      assert.deepStrictEqual(late.requeued.map((r) => r.updateId), [zombie])
    }))

  it.effect("rows of a term whose instance has no connection left, or of this instance's earlier term, come back at the first pass; a connected one's wait", () =>
    Effect.gen(function*() {
      yield* clearInbox
      const sql = yield* SqlClient
      const termStart = Date.UTC(2031, 6, 1)
      const [killed, killedLater, deposed, ownEarlier] = [++nextId, ++nextId, ++nextId, ++nextId]
      const insert = (
        id: number,
        chatId: number,
        claimedAt: number,
        claimedBy: string
      ) => sql`INSERT INTO telegram_updates (update_id, chat_id, kind, payload, received_at, status, claimed_at, claimed_by)
            VALUES (${id}, ${chatId}, 'message', ${JSON.stringify(message(id, chatId))}::jsonb,
                    ${new Date(claimedAt - 100)}, 'processing', ${new Date(claimedAt)}, ${claimedBy})`
      yield* insert(killed, 8, termStart - 200, GONE_TERM)
      yield* insert(killedLater, 9, termStart + 50, GONE_TERM)
      yield* insert(deposed, 10, termStart - 200, DEAD_TERM)
      // This instance's own earlier term (it lost the lock and won it back): its services have stopped.
      yield* insert(ownEarlier, 11, termStart - 3_000, "this-instance/term-before")
      const deposedProcess = yield* connectedAs("other-instance")

      const reconciler = yield* passAt(
        termStart,
        Reconciler.make.pipe(Effect.provide(Layer.succeed(LeaderTerm, { id: THIS_TERM })))
      )
      const logs = makeLogCapture()
      const first = yield* passAt(termStart + 100, reconciler.pass).pipe(Effect.provide(logs.layer))
      assert.deepStrictEqual(first.requeued.map((r) => [r.updateId, r.reason]), [
        [killed, "gone"],
        [killedLater, "gone"],
        [ownEarlier, "own"]
      ])
      assert.isDefined(
        logs.lines().find((l) =>
          l.message === `[RECONCILE] update ${killed} was in processing for 0 s under ${GONE_TERM}, whose instance ` +
            "has no database connection left (gone): back to pending at once"
        )
      )
      assert.deepStrictEqual(
        (yield* rows).map((r) => [r.update_id, r.status]),
        [[killed, "pending"], [killedLater, "pending"], [deposed, "processing"], [ownEarlier, "pending"]],
        "the connected instance's row keeps the grace"
      )

      // Once that process has no connection left either, the next recheck takes its row back.
      yield* deposedProcess.close
      yield* backendGone(deposedProcess.pid)
      const recheck = yield* passAt(termStart + 1_100, reconciler.recheck)
      assert.deepStrictEqual(recheck.map((r) => [r.updateId, r.reason]), [[deposed, "gone"]])
    }))

  it.effect("deletes finished updates past INBOX_RETENTION_HOURS, keeps the rest", () =>
    Effect.gen(function*() {
      yield* clearInbox
      const sql = yield* SqlClient
      const now = Date.UTC(2030, 0, 10)
      const [oldDone, oldDead, recentDone, oldPending] = [++nextId, ++nextId, ++nextId, ++nextId]
      const insert = (
        id: number,
        status: string,
        processedAt: Date | null
      ) => sql`INSERT INTO telegram_updates (update_id, chat_id, kind, payload, received_at, status, processed_at)
            VALUES (${id}, 3, 'message', '{}'::jsonb, ${new Date(now - 72 * 3_600_000)}, ${status}, ${processedAt})`
      yield* insert(oldDone, "done", new Date(now - 49 * 3_600_000))
      yield* insert(oldDead, "dead", new Date(now - 49 * 3_600_000))
      yield* insert(recentDone, "done", new Date(now - 47 * 3_600_000))
      yield* insert(oldPending, "pending", null)
      const reconciler = yield* Reconciler.make.pipe(Effect.provide(Layer.succeed(LeaderTerm, { id: THIS_TERM })))
      const report = yield* passAt(now, reconciler.pass)
      assert.strictEqual(report.purged, 2)
      assert.deepStrictEqual((yield* rows).map((r) => r.update_id), [recentDone, oldPending])
    }))
})
