/**
 * `npm run chaos`: the full fault drill (test/support/Drill.ts). Two real
 * instances on one database behind a load balancer, the fake Bot API and the
 * fake Kie on loopback; 1,000 updates from 220 chats and 100 generations while
 * the ACTIVE instance is SIGKILLed three times and its database connections
 * are cut once. Then the flood drill (test/support/FloodDrill.ts): one chat
 * sends 1,000 messages while Telegram answers it 429, and 50 other users go
 * from /start to their picture; it reports their /start p99 (goal ≤ 1 s) and
 * what the flooder cost. Prints every check and exits 1 if any failed.
 *
 * The database: a fresh one on the server BENCH_DATABASE_URL / DATABASE_URL
 * names, dropped afterwards, else on an embedded PostgreSQL started for the
 * run (bench/pg.ts, as for `npm run bench`).
 *
 *   npm run chaos
 *   CHAOS_GENERATIONS=20 CHAOS_BURST_CHATS=40 npm run chaos   # smaller
 */
import { Effect } from "effect"
import { randomBytes } from "node:crypto"
import * as os from "node:os"
import * as path from "node:path"
import { type Fault, runDrill } from "../test/support/Drill.ts"
import { runFloodDrill } from "../test/support/FloodDrill.ts"
import { acquireServer, createDatabase, dropCreated } from "./pg.ts"

const numberFrom = (name: string, fallback: number) => {
  const raw = process.env[name]
  const value = raw === undefined || raw === "" ? fallback : Number(raw)
  if (!Number.isInteger(value) || value < 0) throw new Error(`${name} must be a whole number, got ${raw}`)
  return value
}

const burstChats = numberFrom("CHAOS_BURST_CHATS", 120)
const generations = numberFrom("CHAOS_GENERATIONS", 100)
const faults: ReadonlyArray<Fault> = ["kill", "cut", "kill", "kill"]

const server = await acquireServer({ unsafeFast: true })
console.log(
  `database: ${
    server.kind === "embedded"
      ? "embedded PostgreSQL started for the run"
      : "the server BENCH_DATABASE_URL / DATABASE_URL names"
  }`
)
const suffix = randomBytes(4).toString("hex")
const name = `chaos_${suffix}`
const floodName = `chaos_flood_${suffix}`
const floodUpdates = numberFrom("CHAOS_FLOOD_UPDATES", 1_000)
const floodOthers = numberFrom("CHAOS_FLOOD_CHATS", 50)

const program = (databaseUrl: string) => Effect.gen(function*() {
  const logDir = path.join(os.tmpdir(), `zimage-chaos-logs-${name}`)
  console.log(
    `drill: ${
      burstChats * 5 + generations * 4
    } updates (${burstChats} burst chats, ${generations} users with a generation), faults: ${faults.join(", ")}`
  )
  const report = yield* runDrill({
    databaseUrl,
    burstChats,
    generations,
    faults,
    spreadMs: 30_000,
    telegramLatencyMs: 30,
    timeoutMs: 600_000,
    answerWaitGoalMs: 5_000,
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
      `${
        (report.answerWait.max / 1000).toFixed(1)
      } s at most; ${report.instancesStarted} instances started; ${report.logLines} log lines in ${logDir}; ` +
      `${(report.durationMs / 1000).toFixed(1)} s`
  )
  const failed = report.checks.filter((c) => !c.ok)
  console.log(failed.length === 0 ? "chaos drill: all checks passed" : `chaos drill: ${failed.length} check(s) FAILED`)
  return failed.length === 0
})

const flood = (databaseUrl: string) => Effect.gen(function*() {
  console.log("")
  console.log(`flood drill: one chat sends ${floodUpdates} messages, ${floodOthers} others go from /start to a picture`)
  const report = yield* runFloodDrill({
    databaseUrl,
    floodUpdates,
    otherChats: floodOthers,
    startP99GoalMs: 1_000,
    floodRetryAfterSeconds: 20,
    afterFloodMs: 10_500,
    timeoutMs: 300_000,
    logDir: path.join(os.tmpdir(), `zimage-chaos-logs-${floodName}`),
    progress: (line) => console.log(`  ${line}`)
  })
  console.log("")
  console.log("| check | result | detail |")
  console.log("|---|---|---|")
  for (const check of report.checks) console.log(`| ${check.name} | ${check.ok ? "ok" : "FAILED"} | ${check.detail} |`)
  const f = report.flooder
  console.log(
    `others: /start ${report.startWait.p50.toFixed(0)} ms median, ${report.startWait.p99.toFixed(0)} ms p99, ` +
      `${report.startWait.max.toFixed(0)} ms at most; every answer ${report.stepWait.p99.toFixed(0)} ms p99; ` +
      `${report.photos} pictures. Flooder: ${f.sent} sent in ${
        f.floodSeconds.toFixed(1)
      } s, ${f.rowsStored} rows stored, ` +
      `${f.droppedMetric} dropped, ${f.messagesDelivered} messages sent to it (${f.notices} notice), ` +
      `${f.answered429} answered 429 by Telegram; ${(report.durationMs / 1000).toFixed(1)} s`
  )
  const failed = report.checks.filter((c) => !c.ok)
  console.log(failed.length === 0 ? "flood drill: all checks passed" : `flood drill: ${failed.length} check(s) FAILED`)
  return failed.length === 0
})

let ok = false
try {
  const faultsOk = await Effect.runPromise(Effect.scoped(program(await createDatabase(server, name))))
  const floodOk = await Effect.runPromise(Effect.scoped(flood(await createDatabase(server, floodName))))
  ok = faultsOk && floodOk
} finally {
  await dropCreated(server)
  await server.close()
}
process.exit(ok ? 0 : 1)
