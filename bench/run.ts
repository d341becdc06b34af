/**
 * `npm run bench`: the service's speed and memory figures, measured side by
 * side in one run and printed as one markdown table (see docs/benchmarks.md).
 *
 *   npm run bench                   # full run, about 10 minutes (the 500-generation burst is 4 of them)
 *   npm run bench -- --write        # also writes docs/benchmarks.md
 *   BENCH_QUICK=1 npm run bench     # a smoke run of every figure, about 2 minutes
 *
 * Everything runs on this machine over 127.0.0.1: real service processes
 * (the production bundle by default), a PostgreSQL server
 * (`BENCH_DATABASE_URL` / `DATABASE_URL`, else an embedded one, durable), and
 * the fakes of the Bot API and of Kie from `test/fakes/`. Each phase gets a
 * fresh database. Every loop is bounded in count and time, and the whole run
 * stops by itself (`BENCH_TIME_LIMIT_S`).
 *
 * Knobs (environment): BENCH_SECONDS (per load figure), BENCH_ROUNDS
 * (interleaved rounds), BENCH_RATES, BENCH_CONCURRENCY, BENCH_E2E_RATE,
 * BENCH_SATURATION_SENDERS, BENCH_GENERATIONS, BENCH_FAILOVERS, BENCH_STARTS, BENCH_CONNECTIONS (webhook
 * connections of the open-loop sender, 40 like Telegram), BENCH_ENTRY (a script
 * path instead of the bundle, e.g. src/main.ts, or a bundle built beforehand
 * for an A/B), BENCH_NODE_OPTIONS (instead of the flags of `npm run
 * start:dist`; with BENCH_ENTRY the only flags, none unless set), BENCH_ONLY (some of
 * startup,ingestion,active,failover,memory), BENCH_MEMORY_CHATS,
 * BENCH_MEMORY_RATE (see bench/memory.ts), BENCH_TIME_LIMIT_S, BENCH_DUMP (a file
 * the end-to-end run writes its per-update times to: `[sent, acked, answered]`
 * in epoch ms, for looking at latency over time).
 * Progress goes to stderr; the table to stdout.
 */
import { Effect, Exit, Scope } from "effect"
import { spawn } from "node:child_process"
import * as fs from "node:fs"
import * as path from "node:path"
import { performance } from "node:perf_hooks"
import { fileURLToPath } from "node:url"
import { bundle } from "../scripts/build.ts"
import { storeUpdates } from "../src/inbox/sql/store.ts"
import { FakeKie, localResult } from "../test/fakes/FakeKie.ts"
import * as FakeTelegram from "../test/fakes/FakeTelegram.ts"
import { type ServiceProcess, startService } from "../test/support/ServiceProcess.ts"
import {
  closedLoop,
  failureCount,
  failureText,
  interleave,
  jsonPoster,
  type LoadResult,
  openLoop,
  throughput
} from "./load.ts"
import { cpuTally, loadAverage, machine, postgresCpuMs, processCpuMs, rssOf } from "./machine.ts"
import { memory } from "./memory.ts"
import { acquireServer, connect, createDatabase, dropCreated, type PgServer, serverFacts, withDb } from "./pg.ts"
import { baseEnv, freePort, type Run, startOnce } from "./startup.ts"
import { latencies, median, mib, ms, percentiles, rate, spread } from "./stats.ts"

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..")

// ---------------------------------------------------------------------------
// Settings

const QUICK = process.env.BENCH_QUICK === "1"
const WRITE = process.argv.includes("--write") || process.env.BENCH_WRITE === "1"
const num = (name: string, fallback: number) => {
  const value = process.env[name]
  if (value === undefined || value === "") return fallback
  const parsed = Number(value)
  if (!Number.isFinite(parsed) || parsed <= 0) throw new Error(`${name} must be a positive number`)
  return parsed
}
const list = (name: string, fallback: ReadonlyArray<number>) => {
  const value = process.env[name]
  if (value === undefined || value === "") return fallback
  const parsed = value.split(",").map(Number)
  if (parsed.some((n) => !Number.isFinite(n) || n <= 0))
    throw new Error(`${name} must be a comma-separated list of positive numbers`)
  return parsed
}
const SECONDS = num("BENCH_SECONDS", QUICK ? 2 : 12)
const ROUNDS = Math.round(num("BENCH_ROUNDS", QUICK ? 2 : 4))
const RATES = list("BENCH_RATES", [200, 1000])
const CONCURRENCY = list("BENCH_CONCURRENCY", [8, 32])
const E2E_RATE = num("BENCH_E2E_RATE", 1000)
const SATURATION_SENDERS = Math.round(num("BENCH_SATURATION_SENDERS", 32))
const GENERATIONS = Math.round(num("BENCH_GENERATIONS", QUICK ? 30 : 500))
const FAILOVERS = Math.round(num("BENCH_FAILOVERS", QUICK ? 2 : 5))
const STARTS = Math.round(num("BENCH_STARTS", QUICK ? 2 : 5))
const TIME_LIMIT_S = num("BENCH_TIME_LIMIT_S", 1800)
const ENTRY_SETTING = process.env.BENCH_ENTRY ?? "bundle"
const PHASES = new Set((process.env.BENCH_ONLY ?? "startup,ingestion,active,failover,memory").split(","))

/** Memory goals of issue 14: idle RSS of an instance, RSS per in-flight generation in the burst. */
const IDLE_RSS_GOAL_MIB = 100
const RSS_PER_GENERATION_GOAL_KIB = 20

/** The service's defaults, which the bench does not change. */
const POOL_SIZE = 10
const KIE_WINDOW = { count: 20, windowMs: 10_000 }
/** Telegram opens at most 40 connections to a webhook by default (`max_connections`). */
const TELEGRAM_CONNECTIONS = Math.round(num("BENCH_CONNECTIONS", 40))

const BOT_TOKEN = baseEnv.TELEGRAM_BOT_TOKEN
const KIE_KEY = baseEnv.KIE_API_KEY
const WEBHOOK_SECRET = "bench_webhook_secret-0123456789"
const ACTIVE_LINE = "[LOCK] ✅ ACTIVE MODE"
const PASSIVE_LINE = "PASSIVE_WAIT"

/** What the database CPU figures count (`postgresCpuMs`). */
const DATABASE_CPU_NOTE = "every postgres process on this machine"

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms))
const progress = (message: string) => console.error(`[bench ${new Date().toISOString().slice(11, 19)}] ${message}`)

// ---------------------------------------------------------------------------
// The table

interface Row {
  readonly figure: string
  readonly state: string
  readonly result: string
  readonly latency: string
  readonly goal: string
  readonly met?: boolean | undefined
}
const rows: Array<Row> = []
const add = (row: Row) => {
  rows.push(row)
  progress(`${row.figure} | ${row.result} | ${row.latency}`)
}
const mark = (met: boolean | undefined) => (met === undefined ? "" : met ? "✅ met" : "❌ missed")
const table = () => {
  const escape = (cell: string) => cell.replaceAll("|", "\\|")
  const lines = [
    "| figure | instance | result | p50 / p95 / p99 | goal | |",
    "|---|---|---|---|---|---|",
    ...rows.map((r) => `| ${[r.figure, r.state, r.result, r.latency, r.goal, mark(r.met)].map(escape).join(" | ")} |`)
  ]
  return lines.join("\n")
}

// ---------------------------------------------------------------------------
// Processes and fixtures

const running = new Set<ServiceProcess>()
process.on("exit", () => {
  for (const service of running) service.killAll()
})

let entry = "src/main.ts"
/** With the bundle: the Node flags of `npm run start:dist` (package.json), as NODE_OPTIONS. */
let nodeOptions: Record<string, string> = {}
const startDistFlags = () => {
  const pkg = JSON.parse(fs.readFileSync(path.join(root, "package.json"), "utf8")) as {
    scripts: Record<string, string>
  }
  return (pkg.scripts["start:dist"] ?? "").split(/\s+/).filter((word) => word.startsWith("--")).join(" ")
}
let server: PgServer
let telegram: FakeTelegram.FakeTelegramShape
let nextUpdateId = 1
let dbSeq = 0
const newDatabase = (name: string) => createDatabase(server, `zimage_bench_${process.pid}_${++dbSeq}_${name}`)

interface Service {
  readonly process: ServiceProcess
  readonly port: number
  readonly webhookUrl: string
}

/** A service process in webhook mode on the fake Bot API; resolves once it is ACTIVE or PASSIVE. */
const spawnService = async (
  name: string,
  env: Record<string, string>,
  expect: "active" | "passive"
): Promise<Service> => {
  const port = await freePort()
  const service = startService(
    {
      ...telegram.env,
      KIE_API_KEY: KIE_KEY,
      KIE_BASE_URL: "http://127.0.0.1:9",
      HOST: "127.0.0.1",
      PORT: String(port),
      PUBLIC_URL: `http://127.0.0.1:${port}`,
      TELEGRAM_WEBHOOK_SECRET: WEBHOOK_SECRET,
      LOG_FORMAT: "json",
      LOG_LEVEL: "info",
      INSTANCE_ID: name,
      ...nodeOptions,
      ...env
    },
    { entry }
  )
  running.add(service)
  void service.exited.then(() => running.delete(service))
  await service.waitForLine((l) => l.includes(expect === "active" ? ACTIVE_LINE : PASSIVE_LINE), 60_000)
  await service.waitForLine((l) => l.includes("[DB] ready"), 60_000)
  return { process: service, port, webhookUrl: `http://127.0.0.1:${port}/telegram/webhook` }
}

const stopService = async (service: Service) => {
  service.process.kill("SIGTERM")
  const code = await Promise.race([service.process.exited, sleep(40_000).then(() => "timeout")])
  if (code === "timeout") service.process.killAll()
}

const health = async (port: number): Promise<Record<string, any>> => {
  const response = await fetch(`http://127.0.0.1:${port}/health`, { signal: AbortSignal.timeout(5_000) })
  return await response.json() as Record<string, any>
}

const webhookPoster = (service: Service, maxSockets: number) =>
  jsonPoster(service.webhookUrl, { "x-telegram-bot-api-secret-token": WEBHOOK_SECRET }, maxSockets)

/** The JSON of an update with a fresh `update_id`. */
const updateJson = (update: Record<string, unknown>) => JSON.stringify({ update_id: nextUpdateId++, ...update })

const startCommand = (chatId: number) => FakeTelegram.textMessage({ chatId, text: "/start" })

/**
 * Waits (polling the fake, bounded) until every chat in `chats` got a call of
 * `method` after `after` that satisfies `where`; returns the first such call per chat.
 */
const awaitCalls = async (
  method: string,
  chats: ReadonlyArray<number>,
  options: {
    readonly after: number
    readonly timeoutMs: number
    readonly where?: (call: FakeTelegram.RecordedCall) => boolean
  }
) => {
  const wanted = new Set(chats)
  const found = new Map<number, FakeTelegram.RecordedCall>()
  const deadline = performance.now() + options.timeoutMs
  let scanned = 0
  while (true) {
    const calls = telegram.calls()
    for (; scanned < calls.length; scanned++) {
      const call = calls[scanned]!
      if (call.seq <= options.after || call.method !== method) continue
      const chatId = call.params.chat_id as number
      if (wanted.has(chatId) && !found.has(chatId) && (options.where?.(call) ?? true)) found.set(chatId, call)
    }
    if (found.size === wanted.size || performance.now() > deadline) return found
    await sleep(50)
  }
}

const messageIdOf = FakeTelegram.messageIdOf

// ---------------------------------------------------------------------------
// Phases

/** Cold start (fresh database: migrations run) and restart (migrated), each alone; idle RSS once ACTIVE. */
const startup = async () => {
  progress(`startup: ${STARTS} cold starts and ${STARTS} restarts`)
  const env = { ...telegram.env, KIE_API_KEY: KIE_KEY, INSTANCE_ID: "bench-start", ...nodeOptions }
  const idleRss: Array<number> = []
  const whileActive = async (pid: number) => {
    await sleep(2_000)
    idleRss.push(rssOf(pid))
  }
  const cold: Array<Run> = []
  const urls: Array<string> = []
  for (let i = 0; i < STARTS; i++) {
    const url = await newDatabase("start")
    urls.push(url)
    cold.push(await startOnce({ ...env, DATABASE_URL: url }, { entry, whileActive }))
  }
  const warm: Array<Run> = []
  for (let i = 0; i < STARTS; i++) {
    warm.push(await startOnce({ ...env, DATABASE_URL: urls[i % urls.length]! }, { entry, whileActive }))
  }
  // The bundle runs with the flags of `npm run start:dist`; what do they cost?
  const plain: Array<Run> = []
  const plainRss: Array<number> = []
  if (nodeOptions.NODE_OPTIONS !== undefined) {
    const whilePlain = async (pid: number) => {
      await sleep(2_000)
      plainRss.push(rssOf(pid))
    }
    for (let i = 0; i < STARTS; i++) {
      plain.push(
        await startOnce(
          { ...env, NODE_OPTIONS: "", DATABASE_URL: urls[i % urls.length]! },
          { entry, whileActive: whilePlain }
        )
      )
    }
  }
  const state = "alone"
  add({
    figure: "cold start → /health 200 (fresh database)",
    state,
    result: `${spread(cold.map((r) => r.health))}, median (min–max) of ${cold.length}`,
    latency: "",
    goal: ""
  })
  add({
    figure: "cold start → ACTIVE (fresh database: migrations run)",
    state,
    result: `${spread(cold.map((r) => r.active))}`,
    latency: "",
    goal: ""
  })
  add({
    figure: "restart → /health 200 / → ACTIVE (migrated database)",
    state,
    result: `${spread(warm.map((r) => r.health))} / ${spread(warm.map((r) => r.active))}`,
    latency: "",
    goal: ""
  })
  if (plain.length > 0) {
    add({
      figure: `restart without \`${nodeOptions.NODE_OPTIONS}\`: → /health 200 / → ACTIVE; idle RSS`,
      state,
      result: `${spread(plain.map((r) => r.health))} / ${spread(plain.map((r) => r.active))}; ${mib(median(plainRss))}`,
      latency: "",
      goal: ""
    })
  }
  add({
    figure: "SIGTERM → exit (idle)",
    state: "ACTIVE",
    result: spread([...cold, ...warm].map((r) => r.exit)),
    latency: "",
    goal: ""
  })
  add({
    figure: "idle RSS, 2 s after ACTIVE",
    state: "ACTIVE",
    result: `${mib(median(idleRss))} (${mib(Math.min(...idleRss))}–${
      mib(Math.max(...idleRss))
    }), ${idleRss.length} processes`,
    latency: "",
    goal: `≤ ${IDLE_RSS_GOAL_MIB} MiB`,
    met: median(idleRss) <= IDLE_RSS_GOAL_MIB * 1024 * 1024
  })
}

/**
 * Webhook ingestion on a PASSIVE instance (the bench holds its leader lock,
 * so nothing is dispatched and only storing is measured), next to the raw
 * INSERT rate of the same database with the same driver and pool size,
 * interleaved round by round.
 */
const ingestion = async () => {
  progress("ingestion: webhook ack vs raw INSERT")
  const url = await newDatabase("ingest")
  const lockKey = 7_400_001n
  const raw = await connect(url, POOL_SIZE)
  const lock = await raw.holdLock(lockKey)
  const service = await spawnService("bench-ingest", { DATABASE_URL: url, LEADER_LOCK_KEY: String(lockKey) }, "passive")
  const floor = await startHttpFloor()
  try {
    await sleep(2_000)
    const idle = rssOf(service.process.pid)
    add({
      figure: "idle RSS",
      state: "PASSIVE",
      result: mib(idle),
      latency: "",
      goal: `≤ ${IDLE_RSS_GOAL_MIB} MiB`,
      met: idle <= IDLE_RSS_GOAL_MIB * 1024 * 1024
    })

    await raw.query(`CREATE TABLE bench_raw_insert (
      id bigint PRIMARY KEY, payload jsonb NOT NULL, received_at timestamptz NOT NULL)`)
    let rawId = 1
    const insert = () => {
      const id = rawId++
      return raw.query(`INSERT INTO bench_raw_insert (id, payload, received_at) VALUES ($1, $2::jsonb, now())`, [
        id,
        JSON.stringify({ update_id: id, ...startCommand(100_000 + (id % 10_000)) })
      ]).then(() => "ok")
    }
    // The inbox's INSERT as `Inbox.store` runs it for one webhook update alone (a
    // batch of one): the very statement of src/inbox/sql/store.ts, from the
    // bench, into the same table (ids far above the webhook's).
    let inboxId = 1_000_000_000_000
    const inboxStatement = () => {
      const id = inboxId++
      return raw.run((sql) => storeUpdates(sql, [{ update_id: id, ...startCommand(100_000 + (id % 10_000)) }]))
        .then(() => "ok")
    }
    const webhook = (poster: ReturnType<typeof jsonPoster>) => (i: number) =>
      poster.post(updateJson(startCommand(100_000 + (i % 10_000))))

    // Warm-up (JIT, connections, caches): not counted.
    const warmPoster = webhookPoster(service, 8)
    await closedLoop(webhook(warmPoster), { concurrency: 8, seconds: QUICK ? 0.5 : 2 })
    await closedLoop(insert, { concurrency: 8, seconds: QUICK ? 0.5 : 2 })
    warmPoster.close()

    const roundSeconds = SECONDS / ROUNDS
    const state = "PASSIVE (bench holds its lock)"
    for (const offered of RATES) {
      const poster = webhookPoster(service, TELEGRAM_CONNECTIONS)
      const [hook, ins] = await interleave(ROUNDS, [
        () => openLoop(webhook(poster), { rate: offered, seconds: roundSeconds }),
        () => openLoop(insert, { rate: offered, seconds: roundSeconds })
      ])
      poster.close()
      add({
        figure: `webhook ack, open loop ${offered}/s (${TELEGRAM_CONNECTIONS} connections)`,
        state,
        result: `${rate(throughput(hook!))} achieved, ${hook!.ok} acks, ${failureText(hook!)}`,
        latency: latencies(hook!.latencies),
        ...ackGoal(offered, hook!)
      })
      add({
        figure: `raw INSERT, open loop ${offered}/s (pool of ${POOL_SIZE})`,
        state: "–",
        result: `${rate(throughput(ins!))} achieved, ${failureText(ins!)}`,
        latency: latencies(ins!.latencies),
        goal: ""
      })
    }
    for (const concurrency of CONCURRENCY) {
      const poster = webhookPoster(service, concurrency)
      const serviceCpu = cpuTally(() => processCpuMs(service.process.pid))
      const benchCpu = cpuTally(() => {
        const u = process.cpuUsage()
        return (u.user + u.system) / 1000
      })
      const floorPoster = jsonPoster(`${floor.url}/telegram/webhook`, {}, concurrency)
      const [hook, inboxSql, ins, bare] = await interleave(ROUNDS, [
        () =>
          serviceCpu.during(() =>
            benchCpu.during(() => closedLoop(webhook(poster), { concurrency, seconds: roundSeconds }))
          ),
        () => closedLoop(inboxStatement, { concurrency, seconds: roundSeconds }),
        () => closedLoop(insert, { concurrency, seconds: roundSeconds }),
        () => closedLoop(webhook(floorPoster), { concurrency, seconds: roundSeconds })
      ])
      poster.close()
      floorPoster.close()
      const ratio = throughput(hook!) / throughput(ins!)
      const perAck = (tally: { total: () => number }) => (tally.total() / hook!.ok * 1000).toFixed(0)
      add({
        figure: `webhook ack, closed loop, ${concurrency} senders`,
        state,
        result:
          `${rate(throughput(hook!))} = **${(ratio * 100).toFixed(0)} %** of raw INSERT; ${failureText(hook!)}; ` +
          `CPU per ack: service ${perAck(serviceCpu)} µs, load generator ${perAck(benchCpu)} µs`,
        latency: latencies(hook!.latencies),
        goal: "≥ 60 % of raw INSERT",
        met: ratio >= 0.6 && failureCount(hook!) === 0
      })
      add({
        figure: `bare node:http server (JSON.parse, no database), ${concurrency} senders`,
        state: "–",
        result:
          `${rate(throughput(bare!))} = ${(throughput(bare!) / throughput(ins!) * 100).toFixed(0)} % of raw INSERT: ` +
          `the ceiling HTTP and the load generator leave on this machine; the webhook reaches ` +
          `${(throughput(hook!) / throughput(bare!) * 100).toFixed(0)} % of it; ${failureText(bare!)}`,
        latency: latencies(bare!.latencies),
        goal: ""
      })
      add({
        figure: `the inbox's INSERT statement run directly, ${concurrency} callers`,
        state: "–",
        result: `${rate(throughput(inboxSql!))} = ${
          (throughput(inboxSql!) / throughput(ins!) * 100).toFixed(0)
        } % of raw INSERT; ${failureText(inboxSql!)}`,
        latency: latencies(inboxSql!.latencies),
        goal: ""
      })
      add({
        figure: `raw INSERT, closed loop, ${concurrency} callers (pool of ${POOL_SIZE})`,
        state: "–",
        result: `${rate(throughput(ins!))}, ${failureText(ins!)}`,
        latency: latencies(ins!.latencies),
        goal: ""
      })
    }
  } finally {
    await stopService(service)
    await floor.stop()
    await lock.release()
    await raw.close()
  }
}

/** The issue's goal for webhook acks at 1,000/s and above: p99 ≤ 10 ms, no errors. */
const ackGoal = (offered: number, acks: LoadResult) =>
  offered >= 1000
    ? { goal: "p99 ≤ 10 ms", met: percentiles(acks.latencies).p99 <= 10 && failureCount(acks) === 0 }
    : { goal: "" }

/**
 * A bench script (`bench/httpFloor.ts`, `bench/grammyCeiling.ts`) as a
 * process of its own on a free port; resolves once it prints "listening".
 */
const startBenchServer = async (script: string, args: ReadonlyArray<string> = []) => {
  const port = await freePort()
  const child = spawn(process.execPath, [path.join(root, script), String(port), ...args], {
    stdio: ["ignore", "pipe", "inherit"]
  })
  await new Promise<void>((resolve, reject) => {
    child.stdout.on("data", (chunk: Buffer) => chunk.toString().includes("listening") && resolve())
    child.once("exit", (code) => reject(new Error(`${script} exited with ${code}`)))
  })
  return {
    url: `http://127.0.0.1:${port}`,
    pid: child.pid!,
    stop: () =>
      new Promise<void>((resolve) => {
        child.once("exit", () => resolve())
        child.kill("SIGTERM")
      })
  }
}

/** bench/httpFloor.ts: the bare node:http floor of the webhook figures. */
const startHttpFloor = () => startBenchServer("bench/httpFloor.ts")

/**
 * The ACTIVE instance: `/start` end to end at a fixed rate, then a burst of
 * generations from distinct users against the fake Kie's real limit.
 */
const activeInstance = async () => {
  const kie = await FakeKie.start({
    apiKey: KIE_KEY,
    createLimit: KIE_WINDOW,
    defaultTask: { steps: [localResult()] }
  })
  const url = await newDatabase("active")
  const service = await spawnService("bench-active", {
    DATABASE_URL: url,
    LEADER_LOCK_KEY: "7400002",
    KIE_BASE_URL: kie.url
  }, "active")
  try {
    await service.process.waitForLine((l) => l.includes("ACTIVE_ENTER"), 30_000)
    await endToEnd(service, url)
    await saturation(service)
    await burst(service, kie)
  } finally {
    await stopService(service)
    await kie.close()
  }
}

/** Committed and rolled-back transactions of the database so far (flushed by PostgreSQL within about a second). */
const transactions = (url: string) =>
  withDb(url, async (db) =>
    Number(
      (await db.query<{ n: string }>(
        `SELECT (xact_commit + xact_rollback)::text AS n FROM pg_stat_database WHERE datname = current_database()`
      ))[0]!.n
    ))

const endToEnd = async (service: Service, url: string) => {
  progress(`end to end: /start at ${E2E_RATE}/s`)
  const poster = webhookPoster(service, TELEGRAM_CONNECTIONS)
  try {
    // Warm-up: a second at a quarter of the rate, answered, not counted.
    const warmChats = Array.from({ length: Math.ceil(E2E_RATE / 4) }, (_, i) => 190_000 + i)
    const warmMark = telegram.mark()
    await openLoop((i) => poster.post(updateJson(startCommand(warmChats[i]!))), { rate: E2E_RATE / 4, seconds: 1 })
    await awaitCalls("sendMessage", warmChats, { after: warmMark, timeoutMs: 30_000 })

    const total = Math.round(E2E_RATE * SECONDS)
    const chats = Array.from({ length: total }, (_, i) => 200_000 + i)
    const scheduledAt = Array.from<number>({ length: total })
    const ackedAt = Array.from<number>({ length: total })
    // FakeTelegram stamps calls with Date.now(); this maps performance.now() onto it.
    const epochOffset = Date.now() - performance.now()
    await sleep(1_500)
    const transactionsBefore = await transactions(url)
    const before = telegram.mark()
    const serviceCpu = cpuTally(() => processCpuMs(service.process.pid))
    const databaseCpu = cpuTally(postgresCpuMs)
    const acks = await databaseCpu.during(() =>
      serviceCpu.during(() =>
        openLoop(async (i, scheduled) => {
          scheduledAt[i] = scheduled + epochOffset
          const outcome = await poster.post(updateJson(startCommand(chats[i]!)))
          ackedAt[i] = performance.now() + epochOffset
          return outcome
        }, { rate: E2E_RATE, seconds: SECONDS })
      )
    )
    const replies = await databaseCpu.during(() =>
      serviceCpu.during(() => awaitCalls("sendMessage", chats, { after: before, timeoutMs: 60_000 }))
    )
    await sleep(1_500)
    const perStart = (await transactions(url) - transactionsBefore) / total
    const fromSend: Array<number> = []
    const fromAck: Array<number> = []
    chats.forEach((chatId, i) => {
      const reply = replies.get(chatId)
      if (reply === undefined || ackedAt[i] === undefined) return
      fromSend.push(reply.at - scheduledAt[i]!)
      fromAck.push(reply.at - ackedAt[i]!)
    })
    // Per-update times (sent, acked, answered; epoch ms) for a look at latency over time.
    const dump = process.env.BENCH_DUMP
    if (dump)
      fs.writeFileSync(dump, JSON.stringify(chats.map((c, i) => [scheduledAt[i], ackedAt[i], replies.get(c)?.at])))
    const p99 = percentiles(fromSend).p99
    const missing = total - replies.size
    const cpuPerStart = serviceCpu.total() / total * 1000
    add({
      figure: `/start end to end at ${E2E_RATE}/s: update sent → sendMessage at the fake Bot API`,
      state: "ACTIVE",
      result: `${replies.size} of ${total} answered${missing > 0 ? ` (${missing} not within 60 s)` : ""}`,
      latency: latencies(fromSend),
      goal: "p99 ≤ 50 ms",
      met: p99 <= 50 && missing === 0
    })
    add({
      figure: `/start at ${E2E_RATE}/s: cost per /start (store, dispatch, reply)`,
      state: "ACTIVE",
      result: `service CPU ${cpuPerStart.toFixed(0)} µs, ${perStart.toFixed(2)} database transactions; ` +
        `the database's CPU ${(databaseCpu.total() / total * 1000).toFixed(0)} µs (${DATABASE_CPU_NOTE})`,
      latency: "",
      goal: "≤ 1 ms CPU, ≤ 3 transactions",
      met: cpuPerStart <= 1000 && perStart <= 3
    })
    add({
      figure: `/start end to end at ${E2E_RATE}/s: webhook 200 (update stored) → sendMessage`,
      state: "ACTIVE",
      result: "the same requests, counted from when their 200 came back",
      latency: latencies(fromAck),
      goal: "p99 ≤ 50 ms",
      met: percentiles(fromAck).p99 <= 50 && missing === 0
    })
    add({
      figure: `webhook ack at ${E2E_RATE}/s while ACTIVE (the same run)`,
      state: "ACTIVE",
      result: `${rate(throughput(acks))} achieved, ${failureText(acks)}`,
      latency: latencies(acks.latencies),
      ...ackGoal(E2E_RATE, acks)
    })
  } finally {
    poster.close()
  }
}

/**
 * A closed loop of `/start`s: each sender posts the `/start` of a new chat to
 * `webhookUrl` and waits until the fake Bot API received the `sendMessage` to
 * that chat (at most 30 s), then sends the next. Chats count up from `firstChat`.
 */
const startLoop = (webhookUrl: string, firstChat: number, senders: number) => {
  const poster = jsonPoster(webhookUrl, { "x-telegram-bot-api-secret-token": WEBHOOK_SECRET }, senders)
  const waiting = new Map<number, () => void>()
  const stopListening = telegram.onCall((call) => {
    if (call.method !== "sendMessage") return
    const chatId = call.params.chat_id as number
    const answered = waiting.get(chatId)
    if (answered === undefined) return
    waiting.delete(chatId)
    answered()
  })
  let nextChat = firstChat
  const op = async () => {
    const chatId = nextChat++
    let timer: NodeJS.Timeout | undefined
    const replied = new Promise<string>((resolve) => {
      waiting.set(chatId, () => resolve("ok"))
      timer = setTimeout(() => resolve("no reply within 30 s"), 30_000)
    })
    const outcome = await poster.post(updateJson(startCommand(chatId)))
    if (outcome !== "ok") waiting.delete(chatId)
    const result = outcome === "ok" ? await replied : outcome
    clearTimeout(timer)
    return result
  }
  return {
    run: (seconds: number) => closedLoop(op, { concurrency: senders, seconds }),
    close: () => {
      stopListening()
      poster.close()
    }
  }
}

/**
 * Saturation: `/start`s in a closed loop against the ACTIVE service and
 * against a plain grammY webhook bot answering from memory (the ceiling for
 * any bot on this machine), interleaved round by round.
 */
const saturation = async (service: Service) => {
  progress(`saturation: /start closed loop, ${SATURATION_SENDERS} senders, vs a plain grammY bot`)
  const ceiling = await startBenchServer("bench/grammyCeiling.ts", [telegram.apiRoot, BOT_TOKEN, WEBHOOK_SECRET])
  const ours = startLoop(service.webhookUrl, 1_000_000, SATURATION_SENDERS)
  const theirs = startLoop(ceiling.url, 5_000_000, SATURATION_SENDERS)
  try {
    await ours.run(QUICK ? 0.5 : 2)
    await theirs.run(QUICK ? 0.5 : 2)
    const serviceCpu = cpuTally(() => processCpuMs(service.process.pid))
    const databaseCpu = cpuTally(postgresCpuMs)
    const ceilingCpu = cpuTally(() => processCpuMs(ceiling.pid))
    const roundSeconds = SECONDS / ROUNDS
    const [bot, grammy] = await interleave(ROUNDS, [
      () => databaseCpu.during(() => serviceCpu.during(() => ours.run(roundSeconds))),
      () => ceilingCpu.during(() => theirs.run(roundSeconds))
    ])
    const share = throughput(bot!) / throughput(grammy!)
    const perStart = (tally: { total: () => number }, result: LoadResult) =>
      `${(tally.total() / result.ok * 1000).toFixed(0)} µs`
    add({
      figure: `/start saturation, closed loop, ${SATURATION_SENDERS} senders: webhook POST → sendMessage`,
      state: "ACTIVE",
      result: `${rate(throughput(bot!))} = **${(share * 100).toFixed(0)} %** of the plain grammY bot; ` +
        `${failureText(bot!)}; service CPU per /start ${perStart(serviceCpu, bot!)}, the database's ` +
        `${perStart(databaseCpu, bot!)} (${DATABASE_CPU_NOTE})`,
      latency: latencies(bot!.latencies),
      goal: "≥ 50 % of grammY",
      met: share >= 0.5 && failureCount(bot!) === 0
    })
    add({
      figure: `plain grammY webhook bot (\`/start\` from memory, no database), ${SATURATION_SENDERS} senders`,
      state: "–",
      result: `${rate(throughput(grammy!))}: the ceiling for any bot on this machine; ${failureText(grammy!)}; ` +
        `its CPU per /start ${perStart(ceilingCpu, grammy!)}`,
      latency: latencies(grammy!.latencies),
      goal: ""
    })
  } finally {
    ours.close()
    theirs.close()
    await ceiling.stop()
  }
}

const burst = async (service: Service, kie: FakeKie) => {
  const n = GENERATIONS
  progress(`burst: ${n} users go through the chat flow, then all pick a ratio at once`)
  const poster = webhookPoster(service, TELEGRAM_CONNECTIONS)
  const chats = Array.from({ length: n }, (_, i) => 300_000 + i)
  /** Sends one update per chat, then waits for each chat's sendMessage answer. */
  const step = async (
    what: string,
    updateOf: (chatId: number) => Record<string, unknown>,
    where?: (call: FakeTelegram.RecordedCall) => boolean
  ) => {
    const after = telegram.mark()
    const outcomes = await Promise.all(chats.map((chatId) => poster.post(updateJson(updateOf(chatId)))))
    const failed = outcomes.filter((o) => o !== "ok")
    if (failed.length > 0) throw new Error(`${what}: ${failed.length} webhook posts failed (${failed[0]})`)
    const replies = await awaitCalls("sendMessage", chats, { after, timeoutMs: 120_000, ...(where ? { where } : {}) })
    if (replies.size < n) throw new Error(`${what}: only ${replies.size} of ${n} chats answered within 120 s`)
    return replies
  }
  try {
    const welcome = await step("/start", startCommand)
    await step(
      "button",
      (chatId) =>
        FakeTelegram.callbackQuery({ chatId, data: "zimage:start", messageId: messageIdOf(welcome.get(chatId)!) })
    )
    const keyboards = await step(
      "prompt",
      (chatId) => FakeTelegram.textMessage({ chatId, text: `кот в космосе №${chatId}` })
    )

    await sleep(3_000)
    const idleRss = rssOf(service.process.pid)
    // Result downloads wait until all n generations were in flight at once (or
    // 30 s passed), so the first photos cannot leave before the last tap is
    // handled and the RSS reading covers every generation, on any machine.
    let openResults = () => {}
    const resultsHeld = new Promise<void>((resolve) => (openResults = resolve))
    const holdCap = setTimeout(() => openResults(), 30_000)
    kie.scriptResults(...Array.from({ length: n }, () => ({ until: resultsHeld })))
    const after = telegram.mark()
    const t0 = performance.now()
    const epochT0 = Date.now()
    // The burst: every user picks a ratio at once.
    const posted = Promise.all(chats.map((chatId) =>
      poster.post(updateJson(FakeTelegram.callbackQuery({
        chatId,
        data: "zimage:ratio:1:1",
        messageId: messageIdOf(keyboards.get(chatId)!)
      })))
    ))
    const idealSeconds = Math.max(0, Math.ceil(n / KIE_WINDOW.count) - 1) * (KIE_WINDOW.windowMs / 1000)
    const deadline = t0 + (idealSeconds + 120) * 1000
    let allInFlight: { rss: number; seconds: number; queued: number } | undefined
    /** On a slow machine the first photos may be out before the last tap is handled: the most seen at once. */
    let mostInFlight = { count: 0, rss: idleRss, queued: 0 }
    let peakRss = idleRss
    let delivered = new Map<number, FakeTelegram.RecordedCall>()
    let lastLog = 0
    while (performance.now() < deadline) {
      peakRss = Math.max(peakRss, rssOf(service.process.pid))
      if (allInFlight === undefined) {
        const h = await health(service.port).catch(() => undefined)
        if (h !== undefined && Number(h.inflight_generations) > mostInFlight.count) {
          mostInFlight = {
            count: Number(h.inflight_generations),
            rss: rssOf(service.process.pid),
            queued: Number(h.queued_generations)
          }
        }
        if (h !== undefined && Number(h.inflight_generations) >= n) {
          allInFlight = {
            rss: rssOf(service.process.pid),
            seconds: (performance.now() - t0) / 1000,
            queued: Number(h.queued_generations)
          }
          openResults()
        }
      }
      delivered = await awaitCalls("sendPhoto", chats, {
        after,
        timeoutMs: 0,
        where: (c) => String(c.params.caption).includes("✅ Готово!")
      })
      if (delivered.size === n) break
      if (performance.now() - lastLog > 30_000) {
        lastLog = performance.now()
        progress(`burst: ${kie.counters.tasksCreated} tasks created, ${delivered.size} photos delivered`)
      }
      await sleep(250)
    }
    openResults()
    clearTimeout(holdCap)
    const postOutcomes = await posted
    const lastPhoto = delivered.size === 0 ? Number.NaN : Math.max(...[...delivered.values()].map((c) => c.at))
    // Tasks the fake created = createTask requests it accepted, stamped at arrival.
    const accepted = [...kie.tasks.values()].map((task) => task.createdAt).sort((a, b) => a - b)
    const budget = KIE_WINDOW.count / (KIE_WINDOW.windowMs / 1000)
    // The budget allows the first 20 at once and each later one 10 s after the one 20 places
    // before it: N tasks need at least idealSeconds from the first to the last.
    const firstToLast = accepted.length > 1 ? (accepted[accepted.length - 1]! - accepted[0]!) / 1000 : Number.NaN
    const efficiency = accepted.length === n && n > KIE_WINDOW.count ? idealSeconds / firstToLast : Number.NaN
    add({
      figure: `burst of ${n} generations (${n} users): createTask rate vs the budget`,
      state: "ACTIVE",
      result: Number.isNaN(efficiency)
        ? `${accepted.length} tasks for ${n} generations: no rate to measure (needs all of them, more than ${KIE_WINDOW.count})`
        : `**${(efficiency * 100).toFixed(1)} %** = ${
          (budget * efficiency).toFixed(2)
        }/s of ${budget}/s: ${n} tasks from the first to the last in ${
          firstToLast.toFixed(1)
        } s, the budget allows ${idealSeconds} s`,
      latency: "",
      goal: "≥ 95 % of 2/s",
      met: !Number.isNaN(efficiency) && efficiency >= 0.95
    })
    add({
      figure: "burst: rate-limit answers (429) from Kie",
      state: "ACTIVE",
      result:
        `${kie.counters.rateLimited} of ${kie.counters.createTask} createTask requests; ${kie.counters.tasksCreated} tasks created for ${n} generations`,
      latency: "",
      goal: "0",
      met: kie.counters.rateLimited === 0
    })
    add({
      figure: "burst: RSS per in-flight generation",
      state: "ACTIVE",
      result: allInFlight === undefined
        ? `the generations never were all in flight at once; at most ${mostInFlight.count}: ${
          ((mostInFlight.rss - idleRss) / Math.max(1, mostInFlight.count) / 1024).toFixed(1)
        } KiB = (${mib(mostInFlight.rss)}, ${mostInFlight.queued} of them queued − ${
          mib(idleRss)
        } before) / ${mostInFlight.count}`
        : `${((allInFlight.rss - idleRss) / n / 1024).toFixed(1)} KiB = (${
          mib(allInFlight.rss)
        } with ${n} in flight, ${allInFlight.queued} of them queued − ${mib(idleRss)} before) / ${n}; peak ${
          mib(peakRss)
        }`,
      latency: "",
      goal: `≤ ${RSS_PER_GENERATION_GOAL_KIB} KiB`,
      met: allInFlight !== undefined && (allInFlight.rss - idleRss) / n / 1024 <= RSS_PER_GENERATION_GOAL_KIB
    })
    add({
      figure: `burst: photos delivered ("✅ Готово!")`,
      state: "ACTIVE",
      result: `${delivered.size} of ${n}, the last ${
        ((lastPhoto - epochT0) / 1000).toFixed(1)
      } s after the burst; all ${n} in flight after ${allInFlight?.seconds.toFixed(1) ?? "–"} s; ${
        postOutcomes.filter((o) => o !== "ok").length
      } webhook errors`,
      latency: "",
      goal: "",
      met: delivered.size === n ? undefined : false
    })
  } finally {
    poster.close()
  }
}

/** Failover: SIGKILL of the ACTIVE process, then SIGTERM, each `FAILOVERS` times, always with a fresh standby. */
const failover = async () => {
  progress(`failover: ${FAILOVERS} × SIGKILL and ${FAILOVERS} × SIGTERM`)
  const url = await newDatabase("failover")
  const env = { DATABASE_URL: url, LEADER_LOCK_KEY: "7400003" }
  let seq = 0
  const spawn = (expect: "active" | "passive") => spawnService(`bench-failover-${++seq}`, env, expect)
  /** Time from `t0` until the standby logs ACTIVE and until its /health says active. */
  const takeover = async (standby: Service, t0: number) => {
    let healthAt: number | undefined
    const polling = (async () => {
      while (performance.now() - t0 < 20_000) {
        const h = await health(standby.port).catch(() => undefined)
        if (h?.active === true) return void (healthAt = performance.now() - t0)
        await sleep(10)
      }
    })()
    await standby.process.waitForLine((l) => l.includes(ACTIVE_LINE), 20_000)
    const lineAt = performance.now() - t0
    await polling
    if (healthAt === undefined) throw new Error("the standby's /health never said active:true")
    return { lineAt, healthAt }
  }
  const kill: Array<{ lineAt: number; healthAt: number }> = []
  const term: Array<{ lineAt: number; healthAt: number }> = []
  const exits: Array<number> = []
  let active = await spawn("active")
  let standby = await spawn("passive")
  try {
    for (let i = 0; i < FAILOVERS; i++) {
      await sleep(1_000)
      let t0 = performance.now()
      active.process.kill("SIGKILL")
      kill.push(await takeover(standby, t0))
      await active.process.exited
      active = standby
      standby = await spawn("passive")

      await sleep(1_000)
      t0 = performance.now()
      active.process.kill("SIGTERM")
      term.push(await takeover(standby, t0))
      const code = await active.process.exited
      exits.push(performance.now() - t0)
      if (code !== 0) throw new Error(`exit code ${code} after SIGTERM`)
      active = standby
      standby = await spawn("passive")
    }
  } finally {
    for (const service of [active, standby]) service.process.killAll()
  }
  const worst = (values: ReadonlyArray<number>) => Math.max(...values)
  const killLine = kill.map((k) => k.lineAt)
  const termLine = term.map((k) => k.lineAt)
  add({
    figure: `failover: SIGKILL of the ACTIVE → standby ACTIVE (log line)`,
    state: "ACTIVE + standby",
    result: `median ${ms(median(killLine))}, max ${
      ms(worst(killLine))
    } of ${kill.length}; /health active:true: median ${ms(median(kill.map((k) => k.healthAt)))}, max ${
      ms(worst(kill.map((k) => k.healthAt)))
    }`,
    latency: "",
    goal: "≤ 200 ms",
    met: worst(killLine) <= 200 && worst(kill.map((k) => k.healthAt)) <= 200
  })
  add({
    figure: `handover: SIGTERM of the ACTIVE → standby ACTIVE (log line)`,
    state: "ACTIVE + standby",
    result: `median ${ms(median(termLine))}, max ${
      ms(worst(termLine))
    } of ${term.length}; /health active:true: median ${ms(median(term.map((k) => k.healthAt)))}, max ${
      ms(worst(term.map((k) => k.healthAt)))
    }; old process exited after ${spread(exits)}`,
    latency: "",
    goal: "≤ 0.5 s",
    met: worst(termLine) <= 500 && worst(term.map((k) => k.healthAt)) <= 500
  })
}

// ---------------------------------------------------------------------------
// Main

const main = async () => {
  const started = new Date()
  const limit = setTimeout(() => {
    console.error(`bench: stopped after the time limit of ${TIME_LIMIT_S} s (BENCH_TIME_LIMIT_S)`)
    for (const service of running) service.killAll()
    const closing = server === undefined ? Promise.resolve() : server.close().catch(() => undefined)
    void Promise.race([closing, sleep(10_000)]).then(() => process.exit(2))
  }, TIME_LIMIT_S * 1000)
  limit.unref()

  const box = machine()
  const loadBefore = loadAverage()
  let disposeBundle = () => {}
  if (ENTRY_SETTING === "bundle") {
    progress("building the production bundle (scripts/build.ts) into .bench-dist")
    const built = await bundle(".bench-dist")
    entry = path.relative(root, built)
    const flags = process.env.BENCH_NODE_OPTIONS ?? startDistFlags()
    if (flags !== "") nodeOptions = { NODE_OPTIONS: flags }
    disposeBundle = () => fs.rmSync(path.dirname(built), { recursive: true, force: true })
  } else {
    entry = ENTRY_SETTING
    // e.g. an A/B of two bundles built beforehand: the flags only when asked for.
    const flags = process.env.BENCH_NODE_OPTIONS ?? ""
    if (flags !== "") nodeOptions = { NODE_OPTIONS: flags }
  }
  progress("starting PostgreSQL")
  server = await acquireServer()
  const facts = await serverFacts(server)
  const scope = Effect.runSync(Scope.make())
  telegram = await Effect.runPromise(FakeTelegram.make({ token: BOT_TOKEN }).pipe(Scope.provide(scope)))
  try {
    if (PHASES.has("startup")) await startup()
    if (PHASES.has("ingestion")) await ingestion()
    if (PHASES.has("active")) await activeInstance()
    if (PHASES.has("failover")) await failover()
    if (PHASES.has("memory")) {
      await memory({
        telegram,
        newDatabase,
        spawnService,
        stopService,
        updateJson,
        startCommand,
        webhookSecret: WEBHOOK_SECRET,
        connections: TELEGRAM_CONNECTIONS,
        add,
        progress
      })
    }
  } finally {
    for (const service of running) service.killAll()
    await Effect.runPromise(Scope.close(scope, Exit.void))
    await dropCreated(server).catch(() => undefined)
    await server.close()
    disposeBundle()
    clearTimeout(limit)
  }

  const minutes = ((Date.now() - started.getTime()) / 60_000).toFixed(1)
  const header =
    `Machine: ${box.cpu}, ${box.cores} cores, ${box.ramGiB.toFixed(0)} GiB RAM, ${box.os}; Node ${box.node}; ` +
    `PostgreSQL ${facts.version} (${server.kind}, fsync=${facts.fsync}, synchronous_commit=${facts.synchronousCommit}); ` +
    `${started.toISOString().slice(0, 16).replace("T", " ")} UTC; service: \`${
      ["node", nodeOptions.NODE_OPTIONS, entry].filter(Boolean).join(" ")
    }\`; ` +
    `${QUICK ? "QUICK smoke run; " : ""}load average before: ${loadBefore}, after: ${loadAverage()}; ${minutes} min`
  const output = `${header}\n\n${table()}`
  console.log(output)
  if (WRITE) {
    const target = path.join(root, "docs/benchmarks.md")
    fs.mkdirSync(path.dirname(target), { recursive: true })
    fs.writeFileSync(target, document(header))
    progress(`wrote ${path.relative(root, target)}`)
  }
}

const document = (header: string) => `# Benchmarks

Measured by \`npm run bench -- --write\` (\`bench/run.ts\`); this file is its output. Re-run it on the
machine you care about: the figures below are from a small shared machine and move with it.

${header}

${table()}

## Method

- **One run, side by side.** Every figure comes from the same run, on one machine, over 127.0.0.1:
  real service processes (${
    entry === "src/main.ts"
      ? "the TypeScript sources"
      : "the production bundle from `scripts/build.ts`, as Render runs it"
  }),
  one PostgreSQL server (${
    server.kind === "embedded"
      ? "embedded, started by the bench, durable: fsync and synchronous_commit as shipped"
      : "the one `BENCH_DATABASE_URL` / `DATABASE_URL` names"
  }, a fresh database per phase),
  and the fakes of the Bot API and of Kie from \`test/fakes/\` in the bench process (CPU time per operation is read
  from \`/proc/<pid>/stat\`, 10 ms ticks, summed over the measured stretches). The load generator shares the CPUs
  with the service and PostgreSQL, so the absolute numbers are lower than on a machine where they are apart; the ratios are the point.
- **Webhook vs raw INSERT.** The webhook figures are taken on a PASSIVE instance (the bench holds the advisory lock on
  its \`LEADER_LOCK_KEY\`), so only receiving and storing is measured: secret check, body read, JSON parse, Schema
  decode, \`INSERT … ON CONFLICT DO NOTHING\` (shared with the webhooks that queued while the previous one ran:
  the inbox group-commits), commit, \`200\` (the wake-up \`NOTIFY\` follows, coalesced, outside the request). The baseline is an autocommit
  \`INSERT\` of the same update JSON as \`jsonb\` into a table of its own (id, payload, timestamp), with the same
  driver (\`@effect/sql-pg\`), a pool of the same size as the service's (\`DATABASE_POOL_SIZE\`, ${POOL_SIZE}), the same
  concurrency. A third contender runs the inbox's own statement (\`storeUpdates\` of \`src/inbox/sql/store.ts\`, imported: \`jsonb_to_recordset\`,
  \`ON CONFLICT\`), one update per statement, directly from the bench into \`telegram_updates\`, to split the gap between the database's share
  and the service's. A fourth is a bare \`node:http\` server in a process of its own (\`bench/httpFloor.ts\`: read the
  body, \`JSON.parse\`, \`200\`; no database), loaded by the same client: the ceiling that HTTP and a load generator
  sharing the same two cores leave for any webhook. The contenders alternate in ${ROUNDS} rounds (order flipped every round) and each figure sums its
  rounds, so a slow stretch of the machine hits both. Warm-up traffic before is not counted.
- **Open loop.** At a fixed offered rate, request *i* is due at *start + i / rate* whether or not earlier ones
  answered, and its latency is counted from that due time (no coordinated omission). The webhook sender uses
  keep-alive connections, at most ${TELEGRAM_CONNECTIONS} (Telegram's default \`max_connections\`); closed-loop senders have
  one connection each.
- **End to end.** \`/start\` from a distinct chat each time, at a fixed rate, to an ACTIVE instance: latency from the
  due time of the webhook request (and, second row, from the moment its \`200\` came back, i.e. after the commit) to
  the moment the fake Bot API received the \`sendMessage\` (its own clock, millisecond resolution). The service's
  CPU time, the database's transactions (\`pg_stat_database\`) and the CPU time of every \`postgres\` process on
  the machine (the database's share; a lower bound, as a process that exits meanwhile takes its time along) over the
  measured stretch are divided by the number of \`/start\`s; the saturation figure divides them the same way.
- **Saturation.** ${SATURATION_SENDERS} senders in a closed loop: each posts the \`/start\` of a new chat and sends the next
  once the fake Bot API received the \`sendMessage\` to that chat. The same loop runs against \`bench/grammyCeiling.ts\`,
  a plain grammY webhook bot in a process of its own that answers \`/start\` from memory (no database, no
  durability) on the same fake Bot API: the ceiling for any bot on this machine. The two alternate in ${ROUNDS} rounds.
- **Burst.** ${GENERATIONS} users each go through \`/start\` → button → prompt; then all of them tap a ratio at once. The fake Kie
  enforces Kie's account limit (20 accepted createTask per sliding 10 s, 429 above it, counted at arrival). That
  budget lets N tasks go out in no less than (⌈N / 20⌉ − 1) × 10 s from the first to the last (20 at once, then each
  one 10 s after the one 20 places before it); the rate figure is that minimum over the time the fake actually saw
  from its first to its last accepted createTask, times 2/s. RSS is VmRSS from \`/proc/<pid>/status\` of the service process: per in-flight generation =
  (RSS when \`/health\` first reports all of them in flight − RSS 3 s before the burst, after the same users' earlier
  steps) / count. It includes whatever the V8 heap kept from handling the ratio taps, so it is an upper bound.
- **Memory** (\`bench/memory.ts\`). \`BENCH_MEMORY_CHATS\` distinct chats (100,000 by default) each send one \`/start\`
  at \`BENCH_MEMORY_RATE\` a second (300; open loop) to an ACTIVE instance of its own; VmRSS is read every second. Rows:
  RSS after the first tenth of the sends, the peak, the least-squares slope over the second half of the sending,
  replies that arrived, and RSS after 30 s idle. Every chat is new to the service, so whatever it keeps per chat
  grows here.
- **Startup.** A process started alone (long-polling mode, on the fake Bot API): spawn → first \`GET /health\` 200
  (polled every 5 ms) and → the \`[LOCK] ✅ ACTIVE MODE\` line; on a fresh database (migrations run), then on the
  migrated ones, then on those again without the Node flags of \`npm run start:dist\` (\`NODE_OPTIONS\` empty: no
  source-map support). Idle RSS 2 s after ACTIVE.
- **Failover.** Two instances on one database. SIGKILL of the ACTIVE (the standby, blocked in \`pg_advisory_lock\`,
  is granted the lock the moment PostgreSQL ends the dead session) and SIGTERM of the ACTIVE (graceful: drain, flip
  PASSIVE, unlock),
  measured from the signal to the standby's \`[LOCK] ✅ ACTIVE MODE\` line and to its \`/health\` saying
  \`active: true\` (polled every 10 ms); a fresh standby is started for every round. Idle instances.
- Latencies are nearest-rank percentiles over all samples; "median (min–max)" for repeated timings.

Knobs: \`BENCH_QUICK=1\` (a smoke run), \`BENCH_SECONDS\`, \`BENCH_ROUNDS\`, \`BENCH_RATES\`, \`BENCH_CONCURRENCY\`,
\`BENCH_E2E_RATE\`, \`BENCH_SATURATION_SENDERS\`, \`BENCH_CONNECTIONS\`, \`BENCH_GENERATIONS\`, \`BENCH_FAILOVERS\`, \`BENCH_STARTS\`, \`BENCH_ENTRY\` (e.g. \`src/main.ts\`),
\`BENCH_NODE_OPTIONS\`, \`BENCH_ONLY\` (some of \`startup,ingestion,active,failover,memory\`), \`BENCH_MEMORY_CHATS\`, \`BENCH_MEMORY_RATE\`, \`BENCH_DATABASE_URL\`,
\`BENCH_TIME_LIMIT_S\`, \`BENCH_DUMP\` (a file for the end-to-end run's per-update times). \`npx node bench/startup.ts\` prints a wider startup table
(module loading, embedded PostgreSQL first start and restart).
`

await main()
