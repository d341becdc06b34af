/**
 * `npm run chaos`: the full fault drill (test/support/Drill.ts). Two real
 * instances on one database behind a load balancer, the fake Bot API and the
 * fake Kie on loopback; 1,000 updates from 220 chats and 100 generations while
 * the ACTIVE instance is SIGKILLed three times and its database connections
 * are cut once. Prints every check and exits 1 if any failed.
 *
 * The database: CHAOS_DATABASE_URL (a server URL; a fresh database is created
 * on it and dropped afterwards), else an embedded PostgreSQL started for the run.
 *
 *   npm run chaos
 *   CHAOS_GENERATIONS=20 CHAOS_BURST_CHATS=40 npm run chaos   # smaller
 */
import { PgClient } from "@effect/sql-pg"
import { Effect, Exit, Layer, Redacted, Scope } from "effect"
import { SqlClient } from "effect/sql/SqlClient"
import { randomBytes } from "node:crypto"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import * as EmbeddedPostgres from "../src/EmbeddedPostgres.ts"
import { type Fault, runDrill } from "../test/support/Drill.ts"

const numberFrom = (name: string, fallback: number) => {
  const raw = process.env[name]
  const value = raw === undefined || raw === "" ? fallback : Number(raw)
  if (!Number.isInteger(value) || value < 0) throw new Error(`${name} must be a whole number, got ${raw}`)
  return value
}

const burstChats = numberFrom("CHAOS_BURST_CHATS", 120)
const generations = numberFrom("CHAOS_GENERATIONS", 100)
const faults: ReadonlyArray<Fault> = ["kill", "cut", "kill", "kill"]

const withDatabase = (url: string, database: string) => {
  const parsed = new URL(url)
  parsed.pathname = `/${database}`
  return parsed.href
}

const admin = (url: string, statement: string) =>
  Effect.gen(function*() {
    const sql = yield* SqlClient
    yield* sql.unsafe(statement)
  }).pipe(Effect.provide(Layer.orDie(PgClient.layer({ url: Redacted.make(url), maxConnections: 1 }))), Effect.orDie)

const program = Effect.gen(function*() {
  let serverUrl = process.env.CHAOS_DATABASE_URL
  if (serverUrl === undefined || serverUrl === "") {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), "zimage-chaos-"))
    fs.chmodSync(dir, 0o755)
    yield* Effect.addFinalizer(() => Effect.sync(() => fs.rmSync(dir, { recursive: true, force: true })))
    const server = yield* EmbeddedPostgres.acquire({ dataDir: path.join(dir, "pg"), unsafeFast: true })
    serverUrl = server.urlFor("postgres")
    console.log(`database: embedded PostgreSQL in ${dir}`)
  }
  const name = `chaos_${randomBytes(4).toString("hex")}`
  yield* Effect.acquireRelease(
    admin(serverUrl, `CREATE DATABASE ${name}`),
    () => admin(serverUrl, `DROP DATABASE IF EXISTS ${name} WITH (FORCE)`)
  )
  const logDir = path.join(os.tmpdir(), `zimage-chaos-logs-${name}`)
  console.log(`drill: ${burstChats * 5 + generations * 4} updates (${burstChats} burst chats, ${generations} users with a generation), faults: ${faults.join(", ")}`)
  const report = yield* runDrill({
    databaseUrl: withDatabase(serverUrl, name),
    burstChats,
    generations,
    faults,
    spreadMs: 30_000,
    telegramLatencyMs: 30,
    timeoutMs: 600_000,
    // Production settings otherwise; a createTask cut off by a kill fails (and is retried by its user) after this.
    generationTimeoutMs: 120_000,
    logDir,
    progress: (line) => console.log(`  ${line}`)
  })
  console.log("")
  console.log("| check | result | detail |")
  console.log("|---|---|---|")
  for (const check of report.checks) console.log(`| ${check.name} | ${check.ok ? "ok" : "FAILED"} | ${check.detail} |`)
  console.log("")
  console.log(
    `${report.updates} updates in ${report.chats} chats (${report.updatesClaimedMoreThanOnce} claimed more than once, ` +
      `${report.resentReplies} replies re-sent); ${report.generations} generations, ${report.photosDelivered} photos, ` +
      `${report.kieTasksCreated} Kie tasks, ${report.kieRateLimited} createTask answered 429; ` +
      `${report.retriedGenerations} retried by their users; users waited for an answer ` +
      `${(report.answerWait.p50 / 1000).toFixed(2)} s median, ${(report.answerWait.p99 / 1000).toFixed(1)} s p99, ` +
      `${(report.answerWait.max / 1000).toFixed(1)} s at most; ${report.instancesStarted} instances started; ${report.logLines} log lines in ${logDir}; ` +
      `${(report.durationMs / 1000).toFixed(1)} s`
  )
  const failed = report.checks.filter((c) => !c.ok)
  console.log(failed.length === 0 ? "chaos drill: all checks passed" : `chaos drill: ${failed.length} check(s) FAILED`)
  return failed.length === 0
})

const scope = Effect.runSync(Scope.make())
const ok = await Effect.runPromise(program.pipe(Scope.provide(scope))).finally(() =>
  Effect.runPromise(Scope.close(scope, Exit.void))
)
process.exit(ok ? 0 : 1)
