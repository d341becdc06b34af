/**
 * LeaderLock against the real test PostgreSQL, with the controller's timers
 * (tries, heartbeats, backoff) on the TestClock: the helpers in
 * `support/LeaderHolders.ts` advance it one second at a time and wait for the
 * real round trips in between, so "within 2 s" below means 2 s of the
 * controller's own clock, independent of machine load.
 */
import { assert, describe, layer } from "@effect/vitest"
import { PgClient, PgConnection } from "@effect/sql-pg"
import { Clock, Effect, Exit, Fiber, Layer, Redacted, Scope, Stream, SubscriptionRef } from "effect"
import { SqlClient } from "effect/sql/SqlClient"
import { TestClock } from "effect/testing"
import * as LeaderLock from "../src/leadership/LeaderLock.ts"
import { heartbeatSettled, isActive, settled, startHolder, tick, tickUntil, waitFor } from "./support/LeaderHolders.ts"
import { startPgProxy } from "./support/PgProxy.ts"
import { TestConfigLive } from "./support/TestConfig.ts"
import { adminDatabaseUrl, TestDatabaseLive } from "./support/TestDatabase.ts"

/** What a leader-only layer saw, in order, across holders. */
const makeRecorder = () => {
  const events: Array<string> = []
  /** A leader-only service: a scoped fiber plus a finalizer that reports the exit it got. */
  const probe = (name: string) =>
    Layer.effectDiscard(Effect.gen(function*() {
      const leader = yield* LeaderLock.LeaderState
      events.push(`${name}:start active=${yield* leader.isActive}`)
      yield* Effect.logInfo("[TEST] leader-only started")
      yield* Effect.addFinalizer((exit) =>
        Effect.gen(function*() {
          events.push(`${name}:finalizer ${exit._tag}`)
          yield* Effect.logInfo(`[TEST] leader-only finalizer exit=${exit._tag}`)
        })
      )
      yield* Effect.forkScoped(
        Effect.never.pipe(
          Effect.onExit((exit) =>
            Effect.sync(() => events.push(`${name}:fiber ${Exit.hasInterrupts(exit) ? "interrupted" : exit._tag}`))
          )
        )
      )
    }))
  return { events, probe }
}

/** The pid of the backend currently holding `key` on this database, if any. */
const lockHolderPid = (key: bigint) =>
  Effect.gen(function*() {
    const sql = yield* SqlClient
    const rows = yield* sql<{ pid: number }>`SELECT pid FROM pg_locks
      WHERE locktype = 'advisory' AND granted AND objsubid = 1
        AND database = (SELECT oid FROM pg_database WHERE datname = current_database())
        AND ((classid::bigint << 32) | objid::bigint) = ${key.toString()}::bigint`
    return rows[0]?.pid
  })

const terminate = (pid: number) =>
  Effect.gen(function*() {
    const sql = yield* SqlClient
    // With a timeout it returns once the backend is gone (and its locks with it).
    yield* sql`SELECT pg_terminate_backend(${pid}, 5000)`
  })

const indexOf = (messages: ReadonlyArray<string>, fragment: string) => {
  const index = messages.findIndex((m) => m.includes(fragment))
  assert.isAtLeast(index, 0, `expected a log line containing ${JSON.stringify(fragment)} in:\n${messages.join("\n")}`)
  return index
}

const count = (messages: ReadonlyArray<string>, fragment: string) => messages.filter((m) => m.includes(fragment)).length

const KEY = "4242"

layer(TestDatabaseLive.pipe(Layer.provide(TestConfigLive())), { timeout: "120 seconds" })((it) => {
  describe("LeaderLock", () => {
    it.effect("two holders on one key: exactly one ACTIVE; closing the first one's scope hands over", () =>
      Effect.gen(function*() {
        const { events, probe } = makeRecorder()
        const a = yield* startHolder("a", { env: { LEADER_LOCK_KEY: KEY }, leaderOnly: probe("a") })
        assert.isTrue(isActive(a))
        const b = yield* startHolder("b", { env: { LEADER_LOCK_KEY: KEY }, leaderOnly: probe("b") })
        yield* tick([a, b], 3)
        assert.isTrue(isActive(a))
        assert.isFalse(isActive(b))
        assert.deepStrictEqual(events, ["a:start active=true"])
        assert.isDefined(yield* lockHolderPid(4242n))

        // The operator-facing markers, in order, then the leader-only services.
        const aLog = a.messages()
        assert.isBelow(
          indexOf(aLog, "[LOCK] ✅ ACTIVE MODE: PostgreSQL advisory lock acquired"),
          indexOf(aLog, "[LOCK_CONTROLLER] State transition: PASSIVE → ACTIVE")
        )
        assert.isBelow(
          indexOf(aLog, "[LOCK_CONTROLLER] State transition: PASSIVE → ACTIVE"),
          indexOf(aLog, "[STATE_SYNC] active_state: False -> True (reason=lock_acquired)")
        )
        assert.isBelow(
          indexOf(aLog, "[STATE_SYNC] active_state: False -> True (reason=lock_acquired)"),
          indexOf(aLog, "[TEST] leader-only started")
        )
        // PASSIVE_WAIT once (not once per try), naming the holder; again after 30 s.
        const bLog = b.messages()
        assert.strictEqual(count(bLog, "PASSIVE_WAIT"), 1, bLog.join("\n"))
        assert.include(bLog[indexOf(bLog, "PASSIVE_WAIT")], "zimage-bot leader a")
        yield* tick([a, b], 26)
        assert.strictEqual(count(b.messages(), "PASSIVE_WAIT"), 1)
        yield* tick([a, b], 1)
        assert.strictEqual(count(b.messages(), "PASSIVE_WAIT"), 2)
        assert.isTrue(isActive(a), "a kept passing its heartbeats")

        // /health fields on both, always with status ok.
        const aHealth = yield* a.health.report
        const bHealth = yield* b.health.report
        assert.deepInclude(aHealth, { status: "ok", active: true, role: "active", lock_key: KEY })
        assert.deepInclude(bHealth, { status: "ok", active: false, role: "passive", leader_since: null })
        assert.match(String(aHealth.leader_since), /^\d{4}-\d\d-\d\dT/)

        // Graceful release: services drain first (success exit), then PASSIVE, then unlock (a blocked standby
        // is granted the lock by the unlock itself, so the flip must come first).
        yield* Scope.close(a.scope, Exit.void)
        assert.isFalse(isActive(a))
        // b may already be starting: the unlock itself handed it the lock.
        assert.deepStrictEqual(events.slice(0, 3), [
          "a:start active=true",
          "a:fiber interrupted",
          "a:finalizer Success"
        ])
        const released = a.messages()
        const drained = indexOf(released, "[TEST] leader-only finalizer exit=Success")
        const unlocked = indexOf(released, "[LOCK] 🔓 PostgreSQL advisory lock released")
        const flipped = indexOf(released, "[LOCK_CONTROLLER] State transition: ACTIVE → PASSIVE")
        const synced = indexOf(released, "[STATE_SYNC] active_state: True -> False (reason=released)")
        assert.isBelow(drained, flipped)
        assert.isBelow(flipped, synced)
        assert.isBelow(synced, unlocked)

        // The standby is blocked in the lock wait, so the unlock itself hands it
        // the lock: no virtual time passes.
        const releasedAt = yield* Clock.currentTimeMillis
        yield* waitFor(b.leader.status, (s) => s.phase === "active", "b ACTIVE on the release")
        assert.strictEqual(yield* Clock.currentTimeMillis, releasedAt)
        assert.deepStrictEqual(events.slice(3), ["b:start active=true"])
        yield* Scope.close(b.scope, Exit.void)
        assert.isUndefined(yield* lockHolderPid(4242n))
      }))

    it.effect("the holder's backend terminated: PASSIVE within 2 s, a standby ACTIVE within 2 s, old leader work interrupted", () =>
      Effect.gen(function*() {
        const { events, probe } = makeRecorder()
        const a = yield* startHolder("a", { env: { LEADER_LOCK_KEY: KEY }, leaderOnly: probe("a") })
        const b = yield* startHolder("b", { env: { LEADER_LOCK_KEY: KEY }, leaderOnly: probe("b") })
        assert.isTrue(isActive(a))
        assert.isFalse(isActive(b))

        const pid = yield* lockHolderPid(4242n)
        assert.isDefined(pid)
        const killedAt = yield* Clock.currentTimeMillis
        const wallStart = performance.now()
        yield* terminate(pid!)

        yield* waitFor(a.leader.active, (active) => !active, "a to flip PASSIVE")
        const aPassiveAfter = (yield* Clock.currentTimeMillis) - killedAt
        const aWallMs = performance.now() - wallStart
        // a backs off before contending again, leaving the lock to the standby.
        yield* settled(a)
        assert.strictEqual(SubscriptionRef.getUnsafe(a.leader.status).phase, "backoff")
        yield* tickUntil([a, b], () => isActive(b), 2, "b becoming ACTIVE")
        const bActiveAfter = (yield* Clock.currentTimeMillis) - killedAt
        assert.isAtMost(aPassiveAfter, 2000)
        assert.isAtMost(bActiveAfter, 2000)
        console.info(
          `[measure] terminate → holder PASSIVE: ${aPassiveAfter} ms virtual (${aWallMs.toFixed(1)} ms wall); ` +
            `standby ACTIVE: ${bActiveAfter} ms virtual`
        )

        // Loss: flip first, then the services stop without draining.
        assert.deepStrictEqual(events, [
          "a:start active=true",
          "a:fiber interrupted",
          "a:finalizer Failure",
          "b:start active=true"
        ])
        const aLog = a.messages()
        assert.isBelow(indexOf(aLog, "[LOCK] ❌ leader lock lost"), indexOf(aLog, "State transition: ACTIVE → PASSIVE"))
        assert.isBelow(
          indexOf(aLog, "[STATE_SYNC] active_state: True -> False (reason=lock_lost)"),
          indexOf(aLog, "[TEST] leader-only finalizer exit=Failure")
        )

        // The old holder contends again on a new session and stays PASSIVE.
        yield* tick([a, b], 4)
        assert.isFalse(isActive(a))
        assert.isTrue(isActive(b))
        assert.strictEqual(SubscriptionRef.getUnsafe(a.leader.status).phase, "passive")
        assert.notStrictEqual(yield* lockHolderPid(4242n), pid)
        yield* Scope.close(a.scope, Exit.void)
        yield* Scope.close(b.scope, Exit.void)
      }))

    it.effect("a lock session that goes silent (network partition): the holder fences itself on the heartbeat timeout", () =>
      Effect.gen(function*() {
        const { events, probe } = makeRecorder()
        const pg = yield* PgClient.PgClient
        const proxy = yield* startPgProxy(Redacted.value(pg.config.url!))
        const throughProxy = PgClient.layer({ url: Redacted.make(proxy.url), maxConnections: 2 })
        const a = yield* startHolder("a", { env: { LEADER_LOCK_KEY: KEY }, leaderOnly: probe("a"), pg: throughProxy })
        const b = yield* startHolder("b", { env: { LEADER_LOCK_KEY: KEY }, leaderOnly: probe("b") })
        assert.isTrue(isActive(a))
        const pid = yield* lockHolderPid(4242n)

        proxy.freeze()
        const frozenAt = yield* Clock.currentTimeMillis
        // a's round trips now hang, so only b is waited for between steps.
        yield* tickUntil([b], () => !isActive(a), 4, "a fencing itself")
        const fencedAfter = (yield* Clock.currentTimeMillis) - frozenAt
        // One heartbeat interval plus the 2 s statement timeout.
        assert.isAtMost(fencedAfter, 3000)
        assert.include(a.messages().join("\n"), "[STATE_SYNC] active_state: True -> False (reason=lock_lost)")
        assert.deepStrictEqual(events, ["a:start active=true", "a:fiber interrupted", "a:finalizer Failure"])

        // The server still sees a's session holding the lock: nobody is ACTIVE
        // (never two). Once the server drops that session, as TCP keepalives
        // would, the standby takes over.
        yield* tick([b], 2)
        assert.isFalse(isActive(b))
        assert.strictEqual(yield* lockHolderPid(4242n), pid)
        yield* terminate(pid!)
        yield* tickUntil([b], () => isActive(b), 2, "b becoming ACTIVE")
        assert.isFalse(isActive(a))
        console.info(`[measure] partition → holder fenced after ${fencedAfter} ms virtual`)
        yield* Scope.close(b.scope, Exit.void)
        yield* Scope.close(a.scope, Exit.void)
      }))

    it.effect("two bots with different keys on one database are both ACTIVE", () =>
      Effect.gen(function*() {
        const a = yield* startHolder("bot-a", { env: { LEADER_LOCK_KEY: "zimage-bot/production" } })
        const b = yield* startHolder("bot-b", { env: { LEADER_LOCK_KEY: "zimage-bot/staging" } })
        yield* tick([a, b], 2)
        assert.isTrue(isActive(a))
        assert.isTrue(isActive(b))
        assert.notStrictEqual(a.leader.lockKey, b.leader.lockKey)
        yield* Scope.close(a.scope, Exit.void)
        yield* Scope.close(b.scope, Exit.void)
      }))

    it.effect("leader-only services failing to start: logged, lock released to the standby, retried after backoff", () =>
      Effect.gen(function*() {
        const { events, probe } = makeRecorder()
        let builds = 0
        const failsFirst = Layer.mergeAll(
          probe("a"),
          Layer.effectDiscard(
            Effect.suspend(() => ++builds === 1 ? Effect.die(new Error("boom at start")) : Effect.void)
          )
        )
        const a = yield* startHolder("a", { env: { LEADER_LOCK_KEY: KEY }, leaderOnly: failsFirst })
        assert.isFalse(isActive(a))
        assert.strictEqual(SubscriptionRef.getUnsafe(a.leader.status).phase, "backoff")
        assert.isUndefined(yield* lockHolderPid(4242n), "the lock was released")
        const aLog = a.messages()
        assert.include(aLog[indexOf(aLog, "[LOCK] leader-only services failed")], "boom at start")
        assert.include(aLog.join("\n"), "active_state: True -> False (reason=leader_services_failed)")
        // (The probe's fiber may not have started before the sibling layer died.)
        assert.deepStrictEqual(events.filter((e) => !e.includes(":fiber")), [
          "a:start active=true",
          "a:finalizer Failure"
        ])

        const b = yield* startHolder("b", { env: { LEADER_LOCK_KEY: KEY }, leaderOnly: probe("b") })
        assert.isTrue(isActive(b))
        yield* tick([a, b], 5)
        assert.isFalse(isActive(a))
        assert.strictEqual(SubscriptionRef.getUnsafe(a.leader.status).phase, "passive", "a contends again")

        yield* Scope.close(b.scope, Exit.void)
        yield* tickUntil([a], () => isActive(a), 2, "a becoming ACTIVE again")
        assert.strictEqual(builds, 2)
        assert.strictEqual(events.at(-1), "a:start active=true")
        yield* Scope.close(a.scope, Exit.void)
      }))

    it.effect("the database refusing the lock session: PASSIVE, /health ok, backoff, one log line per change", () =>
      Effect.gen(function*() {
        const sql = yield* SqlClient
        const [{ name }] = yield* sql<{ name: string }>`SELECT current_database() AS name`
        const admin = yield* PgConnection.make({ url: Redacted.make(adminDatabaseUrl()) })
        const allowConnections = (allow: boolean) =>
          admin.query(`ALTER DATABASE ${name} ALLOW_CONNECTIONS ${allow}`).pipe(Effect.asVoid)
        yield* allowConnections(false)
        yield* Effect.addFinalizer(() => Effect.ignore(allowConnections(true)))

        const a = yield* startHolder("a", { env: { LEADER_LOCK_KEY: KEY } })
        const phases: Array<string> = []
        yield* SubscriptionRef.changes(a.leader.status).pipe(
          Stream.runForEach((s) => Effect.sync(() => phases.push(s.phase))),
          Effect.forkScoped
        )
        yield* tick([a], 40)
        assert.isFalse(isActive(a))
        const attempts = phases.filter((p) => p === "connecting").length
        assert.isAtLeast(attempts, 4, "kept retrying")
        assert.isAtMost(attempts, 12, "with backoff, not every second")
        const warned = count(a.messages(), "[LOCK] cannot open the lock session")
        assert.strictEqual(warned, 1, a.messages().join("\n"))
        assert.deepInclude(yield* a.health.report, { status: "ok", active: false, role: "passive" })

        yield* allowConnections(true)
        yield* tickUntil([a], () => isActive(a), 12, "a becoming ACTIVE after the database recovers")
        assert.strictEqual(count(a.messages(), "[LOCK] lock session open again"), 1)
        yield* Scope.close(a.scope, Exit.void)
      }))

    it.effect("releasing never hangs: a leader-only finalizer that never ends is cut off after SHUTDOWN_TIMEOUT_MS", () =>
      Effect.gen(function*() {
        const stuck = Layer.effectDiscard(Effect.addFinalizer(() => Effect.never))
        const a = yield* startHolder("a", {
          env: { LEADER_LOCK_KEY: KEY, SHUTDOWN_TIMEOUT_MS: "3000" },
          leaderOnly: stuck
        })
        const b = yield* startHolder("b", { env: { LEADER_LOCK_KEY: KEY } })
        assert.isTrue(isActive(a))
        const closing = yield* Effect.forkChild(Scope.close(a.scope, Exit.void))
        yield* waitFor(a.leader.status, (s) => s.phase === "stepping_down", "a stepping down")
        // SHUTDOWN_TIMEOUT_MS (3 s) plus 1 s of grace on a's clock. a is
        // blocked on its stuck service, so between steps b is waited for as
        // usual and a only until its heartbeat (still running) is answered.
        let ticks = 0
        while (!a.messages().some((m) => m.includes("leader-only services did not stop within 4s"))) {
          assert.isBelow(ticks, 6, "the drain was never cut off")
          yield* tick([b])
          yield* heartbeatSettled(a)
          ticks++
        }
        assert.strictEqual(ticks, 4)
        assert.isFalse(a.messages().some((m) => m.includes("lost while stopping")), a.messages().join("\n"))
        // Then unlock, PASSIVE, and the standby takes over on the release
        // notification: real I/O only, no more virtual time.
        yield* Fiber.join(closing).pipe(Effect.timeout("5 seconds"), TestClock.withLive)
        assert.isFalse(isActive(a))
        yield* waitFor(b.leader.status, (s) => s.phase === "active", "b ACTIVE on the release notification")
        yield* Scope.close(b.scope, Exit.void)
      }))
  })
})
