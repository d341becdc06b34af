/**
 * The real process: bad input ends startup with one clear line and exit code
 * 1; a good configuration serves /health and exits 0 on SIGTERM.
 */
import { assert, describe, it } from "@effect/vitest"
import { Effect } from "effect"
import { getJson, startService } from "./support/ServiceProcess.ts"
import { freshDatabaseUrl } from "./support/TestDatabase.ts"
import { TEST_BOT_TOKEN, TEST_KIE_KEY, processEnv } from "./support/TestConfig.ts"

const env = {
  ...processEnv
}

const assertOneCleanErrorLine = (lines: ReadonlyArray<string>, mentions: string) => {
  const nonEmpty = lines.filter((l) => l.trim() !== "")
  const errors = nonEmpty.filter((l) => JSON.parse(l).level === "ERROR")
  assert.strictEqual(errors.length, 1, nonEmpty.join("\n"))
  const message = JSON.parse(errors[0]!).message as string
  assert.include(message, mentions)
  assert.notMatch(nonEmpty.join("\n"), /\n\s+at /, "no stack trace")
  return message
}

const runToExit = (overrides: Record<string, string>) =>
  Effect.promise(async () => {
    const service = startService({ ...env, ...overrides })
    const code = await service.exited
    return { code, lines: service.lines() }
  })

describe("startup", () => {
  it.live("a missing required variable: one line naming it, exit 1", () =>
    Effect.gen(function*() {
      const { TELEGRAM_BOT_TOKEN: _, ...withoutToken } = env
      const service = startService(withoutToken)
      const code = yield* Effect.promise(() => service.exited)
      assert.strictEqual(code, 1)
      assertOneCleanErrorLine(service.lines(), "TELEGRAM_BOT_TOKEN is required")
    }))

  it.live("an unparsable PORT: one line, exit 1", () =>
    Effect.gen(function*() {
      const { code, lines } = yield* runToExit({ PORT: "ten-thousand" })
      assert.strictEqual(code, 1)
      assertOneCleanErrorLine(lines, "PORT must be a whole number")
    }))

  it.live("a malformed DATABASE_URL: one line without the password, exit 1", () =>
    Effect.gen(function*() {
      const { code, lines } = yield* runToExit({ DATABASE_URL: "postgres://bot:hunter2-secret@:99999/db" })
      assert.strictEqual(code, 1)
      assertOneCleanErrorLine(lines, "DATABASE_URL")
      assert.notInclude(lines.join("\n"), "hunter2-secret")
    }))

  it.live("an unreachable database: /health stays up meanwhile, then one line and exit 1", () =>
    Effect.gen(function*() {
      const service = startService({
        ...env,
        DATABASE_URL: "postgres://bot:hunter2-secret@127.0.0.1:1/app",
        DATABASE_STARTUP_TIMEOUT_MS: "3000"
      })
      const port = yield* Effect.promise(() => service.port())
      const health = yield* Effect.promise(() => getJson(port, "/health"))
      assert.strictEqual(health.status, 200)
      assert.strictEqual(health.body.status, "ok")
      assert.include(["down", "starting"], health.body.db)
      // No database, no lock: PASSIVE, and still healthy.
      assert.strictEqual(health.body.active, false)
      assert.strictEqual(health.body.role, "passive")
      assert.strictEqual(health.body.leader_phase, "waiting_for_database")
      const code = yield* Effect.promise(() => service.exited)
      assert.strictEqual(code, 1)
      const lines = service.lines()
      assertOneCleanErrorLine(lines, "database unreachable")
      const warnings = lines.filter((l) => l.includes("database unreachable, retrying"))
      assert.strictEqual(warnings.length, 1, "logged once per change, not once per attempt")
      assert.notInclude(lines.join("\n"), "hunter2-secret")
      assert.notInclude(lines.join("\n"), TEST_KIE_KEY)
    }))

  it.live("a port already in use: one line, exit 1", () =>
    Effect.gen(function*() {
      const databaseUrl = yield* freshDatabaseUrl
      const first = startService({ ...env, DATABASE_URL: databaseUrl })
      const port = yield* Effect.promise(() => first.port())
      const { code, lines } = yield* runToExit({ DATABASE_URL: databaseUrl, PORT: String(port) })
      first.kill("SIGTERM")
      yield* Effect.promise(() => first.exited)
      assert.strictEqual(code, 1)
      assertOneCleanErrorLine(lines, "port is already in use")
    }))

  it.live("serves /health over HTTP and exits 0 on SIGTERM", () =>
    Effect.gen(function*() {
      const databaseUrl = yield* freshDatabaseUrl
      const service = startService({ ...env, DATABASE_URL: databaseUrl })
      const port = yield* Effect.promise(() => service.port())
      yield* Effect.promise(() => service.waitForLine((l) => l.includes("[DB] ready")))
      // A lone instance takes the leader lock.
      yield* Effect.promise(() => service.waitForLine((l) => l.includes("[LOCK] ✅ ACTIVE MODE")))
      const health = yield* Effect.promise(() => getJson(port, "/health"))
      assert.strictEqual(health.status, 200)
      assert.strictEqual(health.body.status, "ok")
      assert.strictEqual(health.body.active, true)
      assert.strictEqual(health.body.role, "active")
      assert.strictEqual(health.body.queue_depth, 0)
      assert.strictEqual(health.body.db, "ok")
      assert.strictEqual(health.body.db_kind, "external")
      const text = JSON.stringify(health.body)
      assert.notInclude(text, TEST_KIE_KEY)
      assert.notInclude(text, TEST_BOT_TOKEN)
      service.kill("SIGTERM")
      assert.strictEqual(yield* Effect.promise(() => service.exited), 0)
      assert.notInclude(service.lines().join("\n"), TEST_BOT_TOKEN.split(":")[1]!)
    }))
})
