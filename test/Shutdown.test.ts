/**
 * Graceful shutdown of the real process, started the way Render starts it
 * (`npm start`, signal sent to npm):
 *
 * - SIGTERM while a webhook request is in flight: the request still commits
 *   its update and answers 200, the leader lock is released, the HTTP server
 *   and then the pool close, in that order, and the process exits 0.
 * - A database that goes silent during the shutdown: the process still ends
 *   by SHUTDOWN_DEADLINE_MS, with one error line and exit code 1.
 */
import { assert, describe, it } from "@effect/vitest"
import { PgClient } from "@effect/sql-pg"
import { Context, Deferred, Effect, Fiber, Layer, Redacted } from "effect"
import { SqlClient } from "effect/sql/SqlClient"
import { startPgProxy } from "./support/PgProxy.ts"
import { type ServiceProcess, startService } from "./support/ServiceProcess.ts"
import { TEST_WEBHOOK_SECRET, processEnv } from "./support/TestConfig.ts"
import { freshDatabaseUrl } from "./support/TestDatabase.ts"

const env = {
  ...processEnv,
  // Webhook mode; Telegram is never called (there are no leader-only services yet).
  PUBLIC_URL: "https://zimage.example.com",
  TELEGRAM_WEBHOOK_SECRET: TEST_WEBHOOK_SECRET
}

const update = (updateId: number) => ({
  update_id: updateId,
  message: { message_id: 1, date: 1_700_000_000, chat: { id: 42, type: "private" }, text: "hello" }
})

const postWebhook = (port: number, body: unknown) =>
  fetch(`http://127.0.0.1:${port}/telegram/webhook`, {
    method: "POST",
    headers: { "content-type": "application/json", "x-telegram-bot-api-secret-token": TEST_WEBHOOK_SECRET },
    body: JSON.stringify(body)
  }).then(async (response) => ({
    status: response.status,
    connection: response.headers.get("connection"),
    body: await response.json() as Record<string, unknown>
  }))

/** A client of our own on the service's database. */
const sqlOn = (url: string) =>
  Effect.map(
    Layer.build(PgClient.layer({ url: Redacted.make(url), maxConnections: 3 })),
    (context) => Context.get(context, SqlClient)
  )

/** Re-runs `check` until it holds: waits for a real event, bounded in time and count. */
const eventually = <E, R>(what: string, check: Effect.Effect<boolean, E, R>, timeoutMs = 10_000) =>
  Effect.gen(function*() {
    const until = Date.now() + timeoutMs
    for (let i = 0; i < 2_000; i++) {
      if (yield* check) return
      if (Date.now() > until) break
      yield* Effect.promise(() => new Promise((resolve) => setTimeout(resolve, 20)))
    }
    return yield* Effect.die(new Error(`timed out waiting for ${what}`))
  })

/** The exit code, or a failure naming the output if the process is still running after `ms`. */
const exitWithin = (service: ServiceProcess, ms: number) =>
  Effect.promise(() => service.exited).pipe(
    Effect.timeoutOrElse({
      duration: ms,
      orElse: () => Effect.die(new Error(`still running ${ms} ms after the signal:\n${service.lines().join("\n")}`))
    })
  )

const messages = (lines: ReadonlyArray<string>) =>
  lines.flatMap((line) => {
    try {
      const parsed = JSON.parse(line) as { message?: unknown; level?: unknown; timestamp?: unknown }
      return typeof parsed.message === "string"
        ? [{ message: parsed.message, level: String(parsed.level), timestamp: String(parsed.timestamp) }]
        : []
    } catch {
      return [] // npm's own banner lines
    }
  })

const indexOf = (all: ReadonlyArray<{ message: string }>, marker: string) => {
  const index = all.findIndex((entry) => entry.message.includes(marker))
  assert.isAtLeast(index, 0, `no log line with ${JSON.stringify(marker)}:\n${all.map((e) => e.message).join("\n")}`)
  return index
}

describe("shutdown", () => {
  it.live("SIGTERM to `npm start` mid-request: the webhook commits and answers 200, the lock is released, the pool closes, exit 0", () =>
    Effect.gen(function*() {
      const databaseUrl = yield* freshDatabaseUrl
      const service = startService({ ...env, DATABASE_URL: databaseUrl, INSTANCE_ID: "shutdown-test" }, { via: "npm" })
      yield* Effect.addFinalizer(() => Effect.sync(() => service.killAll()))
      const port = yield* Effect.promise(() => service.port())
      yield* Effect.promise(() => service.waitForLine((l) => l.includes("[LOCK] ✅ ACTIVE MODE")))

      const sql = yield* sqlOn(databaseUrl)
      // Insert the same update_id in a transaction left open: the webhook's
      // INSERT … ON CONFLICT waits for it, while everything else (the
      // dispatcher, the reconciler) goes on, since nothing else is locked.
      const letGo = yield* Deferred.make<void>()
      const inserted = yield* Deferred.make<void>()
      const holder = yield* sql.withTransaction(Effect.gen(function*() {
        yield* sql`INSERT INTO telegram_updates (update_id, kind, payload, received_at)
                   VALUES (7001, 'message', '{}'::jsonb, now())`
        yield* Deferred.succeed(inserted, undefined)
        yield* Deferred.await(letGo)
        return yield* Effect.fail("roll back" as const)
      })).pipe(Effect.flip, Effect.forkChild)
      yield* Deferred.await(inserted)

      const request = postWebhook(port, update(7001))
      // The INSERT is in flight: it waits for the test's transaction.
      yield* eventually(
        "the webhook's INSERT to wait for the test's transaction",
        sql<{ n: number }>`SELECT count(*)::int AS n FROM pg_locks WHERE locktype = 'transactionid' AND NOT granted`
          .pipe(
            Effect.map((rows) => rows[0]!.n === 1)
          )
      )

      service.kill("SIGTERM")
      // The lock is handed over while the request is still waiting.
      yield* Effect.promise(() => service.waitForLine((l) => l.includes("[LOCK] 🔓 PostgreSQL advisory lock released")))
      assert.deepStrictEqual(
        // This database's only: other tests (and test runs) on the same server hold leader locks of their own.
        yield* sql<{ n: number }>`SELECT count(*)::int AS n FROM pg_locks WHERE locktype = 'advisory'
          AND database = (SELECT oid FROM pg_database WHERE datname = current_database())`,
        [{ n: 0 }],
        "nobody holds the leader lock: a standby can take it"
      )
      assert.notInclude(service.lines().join("\n"), "[HTTP] server closed", "the server waits for the request")
      yield* Deferred.succeed(letGo, undefined)
      yield* Fiber.join(holder)

      const answer = yield* Effect.promise(() => request)
      // Answered after the commit, on a keep-alive connection that is closed after it.
      assert.deepStrictEqual(answer, { status: 200, connection: "close", body: { ok: true, duplicate: false } })
      assert.strictEqual(yield* exitWithin(service, 30_000), 0)
      assert.deepStrictEqual(
        yield* sql<{ update_id: string; status: string }>`SELECT update_id::text, status FROM telegram_updates`,
        [{ update_id: "7001", status: "pending" }],
        "committed, and left for the next leader"
      )
      assert.deepStrictEqual(
        yield* sql<{ n: number }>`SELECT count(*)::int AS n FROM pg_stat_activity
          WHERE application_name LIKE 'zimage-bot%shutdown-test%'`,
        [{ n: 0 }],
        "every connection of the process is closed"
      )

      const logged = messages(service.lines())
      const order = [
        "[SHUTDOWN] SIGTERM received",
        "[LOCK] releasing leadership",
        "[STATE_SYNC] active_state: True -> False (reason=released)",
        "[LOCK] 🔓 PostgreSQL advisory lock released",
        "[HTTP] server closed",
        "[DB] connection pool closed",
        "[SHUTDOWN] done in"
      ].map((marker) => indexOf(logged, marker))
      assert.deepStrictEqual(order, [...order].sort((a, b) => a - b), "shutdown markers in order")
      const done = /\[SHUTDOWN\] done in (\d+) ms; exit code 0/.exec(logged.at(-1)!.message)
      assert.isNotNull(done, logged.at(-1)!.message)
      // Nothing waited out SHUTDOWN_TIMEOUT_MS (20 s): not the finished request's connection either.
      assert.isBelow(Number(done![1]), 10_000)
      assert.isFalse(logged.some((entry) => entry.level === "ERROR"), "no error on a graceful shutdown")
      if (process.env.MEASURE === "1") {
        for (const entry of logged.slice(indexOf(logged, "[SHUTDOWN] SIGTERM received"))) {
          console.log(`${entry.timestamp} ${entry.message}`)
        }
      }
    }))

  it.live("a database that goes silent during the shutdown: exit 1 at SHUTDOWN_DEADLINE_MS with one line", () =>
    Effect.gen(function*() {
      const databaseUrl = yield* freshDatabaseUrl
      const proxy = yield* startPgProxy(databaseUrl)
      const service = startService(
        { ...env, DATABASE_URL: proxy.url, SHUTDOWN_TIMEOUT_MS: "2000", SHUTDOWN_DEADLINE_MS: "9000" },
        { via: "npm" }
      )
      yield* Effect.addFinalizer(() => Effect.sync(() => service.killAll()))
      yield* Effect.promise(() => service.waitForLine((l) => l.includes("[LOCK] ✅ ACTIVE MODE")))
      // Freeze once the leader-only services are up (the generation engine
      // logs when it has started), so the shutdown meets a running leader.
      yield* Effect.promise(() => service.waitForLine((l) => l.includes("[GEN] engine started")))
      proxy.freeze()
      const signalledAt = Date.now()
      service.kill("SIGTERM")
      const code = yield* exitWithin(service, 20_000)
      const elapsed = Date.now() - signalledAt
      const logged = messages(service.lines())
      // The pool's close waits on sockets that never answer: the deadline ends it.
      assert.strictEqual(code, 1)
      assert.isAtLeast(elapsed, 9000)
      assert.isBelow(elapsed, 15_000)
      const errors = logged.filter((entry) => entry.level === "ERROR")
      // The leader-only services cannot finish their database work either: their
      // drain is cut at SHUTDOWN_TIMEOUT_MS + 1 s, then the process at the deadline.
      assert.deepStrictEqual(errors.map((entry) => entry.message), [
        "[LOCK] leader-only services did not stop within 3s; continuing without them",
        "[SHUTDOWN] graceful shutdown still running 9s after SIGTERM; exiting with code 1"
      ])
      // Before that, the instance stopped being ACTIVE and closed its lock session
      // (the server releases the lock when it notices), and the HTTP server closed.
      indexOf(logged, "[LOCK] unlock failed, closing the lock session instead")
      indexOf(logged, "[STATE_SYNC] active_state: True -> False (reason=released)")
      indexOf(logged, "[HTTP] server closed")
      assert.isFalse(logged.some((entry) => entry.message.startsWith("[SHUTDOWN] done")))
    }))
})
