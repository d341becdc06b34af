/**
 * The parts of LeaderLock driven alone, on the real test PostgreSQL with the
 * parts' timers on the TestClock: a lock session and its statements, the
 * heartbeat, and the standby loop. `LeaderLock.test.ts` covers them wired
 * together.
 */
import { assert, describe, layer } from "@effect/vitest"
import { PgClient } from "@effect/sql-pg"
import { Duration, Effect, Fiber, Schedule, Schema, Stream, SubscriptionRef } from "effect"
import { SqlClient } from "effect/sql/SqlClient"
import { TestClock } from "effect/testing"
import { makeContender, waitSlice } from "../src/leadership/Contender.ts"
import { superviseLock } from "../src/leadership/Heartbeat.ts"
import { type LockSession, lockSessionOptions, openLockSession } from "../src/leadership/LockSession.ts"
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

/** Starts `acquire` on `session` and waits until the standby is PASSIVE; counts its tries. */
const startContending = (session: LockSession) =>
  Effect.gen(function*() {
    const board = yield* makeStatusBoard(KEY)
    const contender = yield* makeContender(KEY, board)
    const tries = yield* countEntries(board.state.status, (s) => s.phase === "trying")
    const acquiring = yield* Effect.forkChild(contender.acquire(session))
    yield* waitFor(board.state.status, (s) => s.phase === "passive", "the standby PASSIVE")
    return { acquiring, board, tries }
  })

interface Backend {
  readonly wait_event_type: string | null
}

/** Polls (live, bounded) what PostgreSQL shows of backend `pid` until `done` holds. */
const waitForBackend = (pid: number, done: (backend: Backend | undefined) => boolean, what: string) =>
  Effect.gen(function*() {
    const sql = yield* SqlClient
    const backend = sql<Backend>`SELECT wait_event_type FROM pg_stat_activity WHERE pid = ${pid}`.pipe(
      Effect.map((rows) => rows[0])
    )
    yield* backend.pipe(
      Effect.repeat({ until: done, schedule: Schedule.spaced("20 millis") }),
      Effect.timeoutOrElse({
        duration: "10 seconds",
        orElse: () => Effect.die(new Error(`timed out waiting for ${what}`))
      }),
      TestClock.withLive
    )
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
        assert.isTrue(yield* tryLock(a, KEY), "true again for its holder")
        assert.isFalse(yield* tryLock(b, KEY))
        assert.deepStrictEqual(yield* findHolder(b, KEY), { pid: a.pid, application_name: "zimage-bot leader parts-a" })

        // Tried twice but taken once (a try by the holder does not count up): one unlock releases it.
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

    it.effect("the standby loop: blocked in the lock wait, no try per second; takes the lock at once on a release", () =>
      Effect.gen(function*() {
        const holder = yield* open("parts-holder")
        const standby = yield* open("parts-standby")
        assert.isTrue(yield* tryLock(holder, KEY))
        const { acquiring, board, tries } = yield* startContending(standby)

        // Its backend waits for the lock in PostgreSQL; the clock moving brings no try until the slice ends.
        yield* waitForBackend(standby.pid, (b) => b?.wait_event_type === "Lock", "the standby waiting for the lock")
        const slice = Duration.toSeconds(waitSlice)
        for (let second = 1; second < slice; second++) yield* TestClock.adjust("1 second")
        assert.strictEqual(SubscriptionRef.getUnsafe(tries), 1, "one try only, before the wait")
        // At the end of a slice: the wait is cancelled, one try, and waiting again.
        yield* TestClock.adjust("1 second")
        yield* waitFor(tries, (n) => n === 2, "the try at the end of the slice")
        yield* waitFor(board.state.status, (s) => s.phase === "passive", "the standby PASSIVE again")
        yield* waitForBackend(standby.pid, (b) => b?.wait_event_type === "Lock", "the standby waiting again")
        assert.isUndefined(acquiring.pollUnsafe(), "still contending")

        // A release with no NOTIFY and no clock move: the wait is granted.
        assert.isTrue(yield* unlock(holder, KEY))
        yield* Fiber.join(acquiring).pipe(Effect.timeout("10 seconds"), TestClock.withLive)
        assert.strictEqual(SubscriptionRef.getUnsafe(tries), 2, "taken by the wait, not by a try")
        assert.isFalse(yield* tryLock(holder, KEY), "the standby holds it now")
        assert.deepStrictEqual(yield* findHolder(holder, KEY), {
          pid: standby.pid,
          application_name: "zimage-bot leader parts-standby"
        })
        // Its usual bounds are back now that it leads.
        assert.deepStrictEqual(
          yield* standby.first(
            "SELECT current_setting('statement_timeout') AS statement_timeout, " +
              "current_setting('lock_timeout') AS lock_timeout",
            Schema.Struct({ statement_timeout: Schema.String, lock_timeout: Schema.String })
          ),
          { statement_timeout: "5s", lock_timeout: "0" }
        )
      }))

    it.effect("the standby loop: the holder's session terminated (a killed leader) → the standby holds the lock at once", () =>
      Effect.gen(function*() {
        const holder = yield* open("parts-killed")
        const standby = yield* open("parts-heir")
        assert.isTrue(yield* tryLock(holder, KEY))
        const { acquiring, tries } = yield* startContending(standby)
        yield* waitForBackend(standby.pid, (b) => b?.wait_event_type === "Lock", "the standby waiting for the lock")

        // No clock move at all: only PostgreSQL granting the wait can finish `acquire`.
        yield* terminate(holder.pid)
        yield* Fiber.join(acquiring).pipe(Effect.timeout("10 seconds"), TestClock.withLive)
        assert.strictEqual(SubscriptionRef.getUnsafe(tries), 1)
        const other = yield* open("parts-other")
        assert.deepStrictEqual(yield* findHolder(other, KEY), {
          pid: standby.pid,
          application_name: "zimage-bot leader parts-heir"
        })
      }))

    it.effect("the standby loop: shutdown while waiting is prompt and leaves no backend queued for the lock", () =>
      Effect.gen(function*() {
        const holder = yield* open("parts-stays")
        const standby = yield* open("parts-leaves")
        const late = yield* open("parts-late")
        assert.isTrue(yield* tryLock(holder, KEY))
        const { acquiring } = yield* startContending(standby)
        yield* waitForBackend(standby.pid, (b) => b?.wait_event_type === "Lock", "the standby waiting for the lock")

        // Interrupting returns without waiting on the blocked statement; closing ends the session.
        yield* Fiber.interrupt(acquiring).pipe(Effect.timeout("1 second"), TestClock.withLive)
        yield* standby.close
        yield* waitForBackend(standby.pid, (b) => b === undefined, "the closed standby's backend to end")

        // Nothing left in the queue: the next waiter gets the lock when the holder lets go.
        const next = yield* startContending(late)
        yield* waitForBackend(late.pid, (b) => b?.wait_event_type === "Lock", "the late standby waiting")
        assert.isTrue(yield* unlock(holder, KEY))
        yield* Fiber.join(next.acquiring).pipe(Effect.timeout("10 seconds"), TestClock.withLive)
        assert.deepStrictEqual(yield* findHolder(holder, KEY), {
          pid: late.pid,
          application_name: "zimage-bot leader parts-late"
        })
      }))
  })
})
