/**
 * Property: whatever happens to the instances (they start, shut down, or have
 * their lock session killed by the server, in any order, with time passing in
 * between), there are never two ACTIVE instances, leader-only work runs only
 * while its instance is ACTIVE, a graceful release drains (success exit) and
 * a loss does not (failure exit), and once things settle exactly one live
 * instance is ACTIVE and it is the one whose session holds the lock.
 *
 * The journal is written synchronously by the instances themselves (their
 * STATE_SYNC log lines, which follow each flip, and the leader-only probe), so
 * its order is the order in which things happened. Real PostgreSQL; the
 * controllers' timers on the TestClock, advanced one second at a time.
 */
import { assert, describe, layer } from "@effect/vitest"
import { Effect, Exit, Layer, Schema, Scope, SubscriptionRef } from "effect"
import { TestClock } from "effect/testing"
import { SqlClient } from "effect/sql/SqlClient"
import { type Holder, isActive, startHolder, tick, waitFor } from "./support/LeaderHolders.ts"
import { TestConfigLive } from "./support/TestConfig.ts"
import { TestDatabaseLive } from "./support/TestDatabase.ts"

const Pick = Schema.Int.check(Schema.isBetween({ minimum: 0, maximum: 3 }))
const Step = Schema.Union([
  /** Another instance starts (at most 4 live). */
  Schema.TaggedStruct("Start", {}),
  /** An instance shuts down (its layer scope closes). */
  Schema.TaggedStruct("Release", { pick: Pick }),
  /** The server kills an instance's lock session (pg_terminate_backend). */
  Schema.TaggedStruct("Lose", { pick: Pick }),
  /** Time passes. */
  Schema.TaggedStruct("Wait", { seconds: Schema.Int.check(Schema.isBetween({ minimum: 1, maximum: 5 })) })
])
type Step = typeof Step.Type
const Steps = Schema.Array(Step).check(Schema.isBetweenLength(3, 8))

type Entry =
  | { readonly kind: "up" | "down"; readonly holder: string }
  | { readonly kind: "work" | "work-end"; readonly holder: string }
  | { readonly kind: "exit"; readonly holder: string; readonly success: boolean }

const KEY = "777"
let generation = 0

/** The application_name-suffix of the session holding the lock, if any. */
const lockOwner = Effect.gen(function*() {
  const sql = yield* SqlClient
  const rows = yield* sql<{ application_name: string }>`SELECT a.application_name FROM pg_locks l
    JOIN pg_stat_activity a ON a.pid = l.pid
    WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1
      AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
      AND ((l.classid::bigint << 32) | l.objid::bigint) = ${KEY}::bigint`
  return rows[0]?.application_name.replace("zimage-bot leader ", "")
})

const killSessionOf = (name: string) =>
  Effect.gen(function*() {
    const sql = yield* SqlClient
    // With a timeout it returns once the backend is gone (and its locks with it).
    const rows = yield* sql<{ killed: boolean }>`SELECT pg_terminate_backend(pid, 5000) AS killed
      FROM pg_stat_activity WHERE application_name = ${`zimage-bot leader ${name}`}`
    return rows.length > 0
  })

/**
 * Waits until the lock session of a holder whose scope closed has left the
 * server. Closing the session ends the connection at once, but its backend
 * exits (and frees what it still held) a moment later, which on a loaded
 * machine the next step can see. Polled every 5 ms of real time, at most 10 s:
 * a session that stays is a leak, and fails the test.
 */
const sessionGone = (holder: Holder) =>
  Effect.gen(function*() {
    const sql = yield* SqlClient
    for (let poll = 0; poll < 2000; poll++) {
      const [row] = yield* sql<{ n: number }>`SELECT count(*)::int AS n FROM pg_stat_activity
        WHERE application_name = ${`zimage-bot leader ${holder.name}`}`
      if (row!.n === 0) return
      yield* TestClock.withLive(Effect.sleep("5 millis"))
    }
    assert.fail(
      `${holder.name}'s lock session outlived its scope; its last lines: ${JSON.stringify(holder.messages().slice(-8))}`
    )
  })

/** Checks the journal: no two instances up at once, work only while up. */
const checkJournal = (journal: ReadonlyArray<Entry>) => {
  const up = new Set<string>()
  journal.forEach((entry, index) => {
    const where = `at journal entry ${index}: ${JSON.stringify(journal.slice(Math.max(0, index - 6), index + 1))}`
    if (entry.kind === "up") {
      assert.strictEqual(up.size, 0, `two ACTIVE at once ${where}`)
      up.add(entry.holder)
    } else if (entry.kind === "down") {
      assert.isTrue(up.delete(entry.holder), `PASSIVE without having been ACTIVE ${where}`)
    } else if (entry.kind === "work") {
      assert.isTrue(up.has(entry.holder), `leader work outside ACTIVE ${where}`)
    }
  })
}

layer(TestDatabaseLive.pipe(Layer.provide(TestConfigLive())), { timeout: "300 seconds" })((it) => {
  describe("LeaderLock property", () => {
    it.effect.prop(
      "random start/release/lose sequences: never two ACTIVE, leader work only while ACTIVE, one ACTIVE when settled",
      { steps: Steps },
      ({ steps }) =>
        Effect.gen(function*() {
          const run = ++generation
          const journal: Array<Entry> = []
          const running = new Map<string, number>()
          const live: Array<Holder> = []

          /** A leader-only service: checks in when built, works every 250 ms, reports how it was stopped. */
          const probe = (name: string) =>
            Layer.effectDiscard(Effect.gen(function*() {
              journal.push({ kind: "work", holder: name })
              running.set(name, (running.get(name) ?? 0) + 1)
              yield* Effect.addFinalizer((exit) =>
                Effect.sync(() => journal.push({ kind: "exit", holder: name, success: Exit.isSuccess(exit) }))
              )
              yield* Effect.sleep("250 millis").pipe(
                Effect.andThen(Effect.sync(() => journal.push({ kind: "work", holder: name }))),
                Effect.forever,
                Effect.ensuring(Effect.sync(() => {
                  running.set(name, running.get(name)! - 1)
                  journal.push({ kind: "work-end", holder: name })
                })),
                Effect.forkScoped
              )
            }))

          const start = Effect.gen(function*() {
            const name = `r${run}-${live.length}-${journal.length}`
            const holder = yield* startHolder(name, {
              env: { LEADER_LOCK_KEY: KEY },
              leaderOnly: probe(name),
              onMessage: (message) => {
                if (message.includes("[STATE_SYNC] active_state: False -> True")) {
                  journal.push({ kind: "up", holder: name })
                } else if (message.includes("[STATE_SYNC] active_state: True -> False")) {
                  journal.push({ kind: "down", holder: name })
                }
              }
            })
            live.push(holder)
          })

          const lastExit = (name: string) => journal.findLast((e) => e.kind === "exit" && e.holder === name)

          /** After every step: time passes, then exactly one live instance leads, and the database agrees. */
          const settle = Effect.gen(function*() {
            yield* tick(live, 3)
            checkJournal(journal)
            const leaders = live.filter(isActive)
            assert.strictEqual(
              leaders.length,
              live.length > 0 ? 1 : 0,
              `ACTIVE: ${leaders.map((h) => h.name).join(", ")}`
            )
            for (const holder of live) {
              const expected = isActive(holder) ? 1 : 0
              assert.strictEqual(running.get(holder.name) ?? 0, expected, `${holder.name}'s leader work`)
              assert.strictEqual(
                SubscriptionRef.getUnsafe(holder.leader.status).phase,
                isActive(holder) ? "active" : "passive"
              )
            }
            assert.strictEqual(yield* lockOwner, leaders[0]?.name)
          })

          const apply = (step: Step) =>
            Effect.gen(function*() {
              switch (step._tag) {
                case "Start": {
                  if (live.length < 4) yield* start
                  break
                }
                case "Release": {
                  if (live.length === 0) break
                  const [holder] = live.splice(step.pick % live.length, 1)
                  const wasActive = isActive(holder!)
                  yield* Scope.close(holder!.scope, Exit.void)
                  yield* sessionGone(holder!)
                  assert.isFalse(isActive(holder!))
                  assert.strictEqual(running.get(holder!.name) ?? 0, 0)
                  if (wasActive)
                    assert.deepStrictEqual(lastExit(holder!.name), {
                      kind: "exit",
                      holder: holder!.name,
                      success: true
                    })
                  break
                }
                case "Lose": {
                  if (live.length === 0) break
                  const holder = live[step.pick % live.length]!
                  const wasActive = isActive(holder)
                  if (!(yield* killSessionOf(holder.name))) break
                  // PASSIVE at once, then its services stopped, then a pause before contending again.
                  yield* waitFor(holder.leader.status, (s) => s.phase === "backoff", `${holder.name} to notice`)
                  assert.isFalse(isActive(holder))
                  if (wasActive) {
                    assert.deepStrictEqual(lastExit(holder.name), { kind: "exit", holder: holder.name, success: false })
                  }
                  break
                }
                case "Wait": {
                  yield* tick(live, step.seconds)
                  break
                }
              }
              yield* settle
            })

          yield* start
          yield* start
          yield* start
          yield* settle
          for (const step of steps) yield* apply(step)
          for (const holder of live) yield* Scope.close(holder.scope, Exit.void)
          checkJournal(journal)
          assert.isTrue(journal.some((e) => e.kind === "work"), "some leader work happened")
        }),
      { timeout: 240_000, arbitrary: { runs: 15, maxShrinks: 8 } }
    )
  })
})
