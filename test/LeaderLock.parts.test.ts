/**
 * The parts of LeaderLock driven alone, on the real test PostgreSQL with the
 * parts' timers on the TestClock: a lock session and its statements, the
 * heartbeat, and the standby loop. `LeaderLock.test.ts` covers them wired
 * together.
 */
import { assert, describe, layer } from "@effect/vitest"
import { PgClient } from "@effect/sql-pg"
import { Effect, Fiber, Stream, SubscriptionRef } from "effect"
import { SqlClient } from "effect/sql/SqlClient"
import { TestClock } from "effect/testing"
import { makeContender } from "../src/leadership/Contender.ts"
import { superviseLock } from "../src/leadership/Heartbeat.ts"
import { lockSessionOptions, openLockSession } from "../src/leadership/LockSession.ts"
import { announceRelease } from "../src/leadership/sql/announceRelease.ts"
import { findHolder } from "../src/leadership/sql/findHolder.ts"
import { tryLock } from "../src/leadership/sql/tryLock.ts"
import { unlock } from "../src/leadership/sql/unlock.ts"
import { makeStatusBoard } from "../src/leadership/StatusBoard.ts"
import { waitFor } from "./support/LeaderHolders.ts"
import { TestPgLive } from "./support/TestDatabase.ts"

const KEY = 5151n

/** Opens a lock session named "zimage-bot leader <name>" in the test's scope. */
const open = (name: string) =>
  Effect.gen(function*() {
    const pg = yield* PgClient.PgClient
    return yield* openLockSession(lockSessionOptions(pg.config, name))
  })

const terminate = (pid: number) =>
  Effect.gen(function*() {
    const sql = yield* SqlClient
    // With a timeout it returns once the backend is gone (and its locks with it).
    yield* sql`SELECT pg_terminate_backend(${pid}, 5000)`
  })

/** How many times `ref` has come to satisfy `entered`, counted from now on. */
const countEntries = <A>(ref: SubscriptionRef.SubscriptionRef<A>, entered: (a: A) => boolean) =>
  Effect.gen(function*() {
    const count = yield* SubscriptionRef.make(0)
    yield* SubscriptionRef.changes(ref).pipe(
      Stream.map(entered),
      Stream.changes,
      Stream.runForEach((yes) => yes ? SubscriptionRef.update(count, (n) => n + 1) : Effect.void),
      Effect.forkScoped
    )
    return count
  })

/** Waits (live) for `fiber` to end and returns its failure. */
const failureOf = <A, E>(fiber: Fiber.Fiber<A, E>) =>
  Fiber.join(fiber).pipe(Effect.flip, Effect.timeout("10 seconds"), TestClock.withLive)

layer(TestPgLive, { timeout: "60 seconds" })((it) => {
  describe("LeaderLock parts", () => {
    it.effect("a lock session: one holder per key, the holder named to others, a dropped connection noticed", () =>
      Effect.gen(function*() {
        const a = yield* open("parts-a")
        const b = yield* open("parts-b")
        assert.isTrue(yield* tryLock(a, KEY))
        assert.isTrue(yield* tryLock(a, KEY), "re-entrant for its holder")
        assert.isFalse(yield* tryLock(b, KEY))
        assert.deepStrictEqual(yield* findHolder(b, KEY), { pid: a.pid, application_name: "zimage-bot leader parts-a" })

        // Twice taken, twice released; then no holder is visible.
        assert.isTrue(yield* unlock(a, KEY))
        assert.isTrue(yield* unlock(a, KEY))
        assert.isFalse(yield* unlock(a, KEY))
        assert.isUndefined(yield* findHolder(b, KEY))

        // The server ending the session: `dropped` fails at once, no clock involved.
        const dropped = yield* Effect.forkChild(a.dropped)
        yield* terminate(a.pid)
        const error = yield* failureOf(dropped)
        assert.strictEqual(error._tag, "LockSessionFailed")
        assert.include(error.message, "the lock session's connection dropped")
      }))

    it.effect("the heartbeat: one check per second while the lock is held; fails once it is not", () =>
      Effect.gen(function*() {
        const a = yield* open("parts-heartbeat")
        assert.isTrue(yield* tryLock(a, KEY))
        const board = yield* makeStatusBoard(KEY)
        yield* board.setPhase("active")
        const checks = yield* countEntries(board.state.status, (s) => s.heartbeatInFlight)
        const supervising = yield* Effect.forkChild(superviseLock(a, KEY, board))

        for (let second = 1; second <= 3; second++) {
          const before = SubscriptionRef.getUnsafe(checks)
          yield* TestClock.adjust("1 second")
          yield* waitFor(checks, (n) => n > before, `heartbeat ${second} to start`)
          yield* waitFor(board.state.status, (s) => s.phase === "active", `heartbeat ${second} to pass`)
        }
        assert.isUndefined(supervising.pollUnsafe(), "still supervising")

        yield* unlock(a, KEY)
        yield* TestClock.adjust("1 second")
        const lost = yield* failureOf(supervising)
        assert.strictEqual(lost._tag, "LeadershipLost")
        assert.strictEqual(lost.message, "the lock session no longer holds the lock")
        assert.isFalse(SubscriptionRef.getUnsafe(board.state.status).heartbeatInFlight)
      }))

    it.effect("the standby loop: PASSIVE while another session holds the lock, takes it at once on its release", () =>
      Effect.gen(function*() {
        const holder = yield* open("parts-holder")
        const standby = yield* open("parts-standby")
        assert.isTrue(yield* tryLock(holder, KEY))
        const board = yield* makeStatusBoard(KEY)
        const contender = yield* makeContender(KEY, board)
        const tries = yield* countEntries(board.state.status, (s) => s.phase === "trying")
        const acquiring = yield* Effect.forkChild(contender.acquire(standby))
        yield* waitFor(board.state.status, (s) => s.phase === "passive", "the standby PASSIVE")

        // One second at a time: a try's own 2 s timeout runs on this clock too.
        for (let second = 1; second <= 5; second++) {
          const before = SubscriptionRef.getUnsafe(tries)
          yield* TestClock.adjust("1 second")
          yield* waitFor(tries, (n) => n > before, `try ${second + 1} to start`)
          yield* waitFor(
            board.state.status,
            (s) => s.phase === "passive",
            `the standby PASSIVE after try ${second + 1}`
          )
        }
        assert.isUndefined(acquiring.pollUnsafe(), "still contending")

        // The release announced: the standby takes the lock without waiting for its next try.
        assert.isTrue(yield* unlock(holder, KEY))
        yield* announceRelease(holder, KEY)
        yield* Fiber.join(acquiring).pipe(Effect.timeout("10 seconds"), TestClock.withLive)
        assert.isFalse(yield* tryLock(holder, KEY), "the standby holds it now")
        assert.deepStrictEqual(yield* findHolder(holder, KEY), {
          pid: standby.pid,
          application_name: "zimage-bot leader parts-standby"
        })
      }))
  })
})
