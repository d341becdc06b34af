/**
 * Startup time of the real process: from spawn to the first `GET /health`
 * 200, to `[DB] ready` and to `[LOCK] ✅ ACTIVE MODE`. `startOnce` is the one
 * way the benches time a start (`bench/run.ts` uses it for its cold-start
 * rows); run directly, this script prints its own, wider table: with an
 * external PostgreSQL (a database on a server this script starts) and with
 * the embedded one (first start with initdb, then restarts on the same
 * directory), and the time to load the modules (spawn → exit on a missing
 * variable). Medians of RUNS runs.
 *
 *   npx node bench/startup.ts            # RUNS=7 by default
 *   RUNS=3 ENTRY=dist/main.js npx node bench/startup.ts
 *   BUNDLE=1 npx node bench/startup.ts   # also the production bundle (scripts/build.ts)
 */
import { spawn } from "node:child_process"
import * as fs from "node:fs"
import * as net from "node:net"
import * as os from "node:os"
import * as path from "node:path"
import { performance } from "node:perf_hooks"
import { fileURLToPath } from "node:url"
import { bundle as buildBundle } from "../scripts/build.ts"
import { acquireServer, createDatabase } from "./pg.ts"
import { spread } from "./stats.ts"

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..")
const RUNS = Number(process.env.RUNS ?? 7)
let ENTRY = process.env.ENTRY ?? "src/main.ts"
export const baseEnv = {
  PATH: process.env.PATH ?? "",
  HOME: process.env.HOME ?? "/tmp",
  TELEGRAM_BOT_TOKEN: "1234567890:AAFakeTokenForBenchOnly_abcdefghijklmn",
  KIE_API_KEY: "kie-bench-key-0123456789abcdef",
  TELEGRAM_API_ROOT: "http://127.0.0.1:9",
  KIE_BASE_URL: "http://127.0.0.1:9",
  HOST: "127.0.0.1",
  LOG_FORMAT: "json"
}

export const freePort = () =>
  new Promise<number>((resolve) => {
    const server = net.createServer().listen(0, "127.0.0.1", () => {
      const { port } = server.address() as net.AddressInfo
      server.close(() => resolve(port))
    })
  })

export interface Run {
  /** Milliseconds from spawn. */
  readonly health: number
  readonly dbReady: number
  readonly active: number
  /** Milliseconds from SIGTERM to the exit. */
  readonly exit: number
}

export interface StartOptions {
  /** The script to run, relative to the repository root. */
  readonly entry?: string
  /** Called once ACTIVE, before SIGTERM (e.g. to read the idle RSS). */
  readonly whileActive?: (pid: number, port: number) => Promise<void>
}

const healthOk = (port: number) => fetch(`http://127.0.0.1:${port}/health`).then((r) => r.status === 200, () => false)

/** One start: spawn, poll /health every 5 ms, watch the log, then SIGTERM and wait for the exit. */
export const startOnce = async (env: Record<string, string>, options: StartOptions = {}): Promise<Run> => {
  const port = await freePort()
  const t0 = performance.now()
  const child = spawn(process.execPath, [path.join(root, options.entry ?? ENTRY)], {
    cwd: root,
    env: { ...baseEnv, PORT: String(port), ...env },
    stdio: ["ignore", "pipe", "pipe"]
  })
  const marks: Partial<Record<"dbReady" | "active", number>> = {}
  let output = ""
  child.stdout.on("data", (chunk: Buffer) => {
    const now = performance.now() - t0
    output += chunk.toString()
    if (marks.dbReady === undefined && output.includes("[DB] ready")) marks.dbReady = now
    if (marks.active === undefined && output.includes("[LOCK] ✅ ACTIVE MODE")) marks.active = now
  })
  child.stderr.on("data", (chunk: Buffer) => void (output += chunk.toString()))
  const exited = new Promise<number>((resolve) => child.once("exit", (code) => resolve(code ?? -1)))
  let health: number | undefined
  const deadline = t0 + 120_000
  while (performance.now() < deadline) {
    if (health === undefined && await healthOk(port)) health = performance.now() - t0
    if (health !== undefined && marks.active !== undefined) break
    if (child.exitCode !== null) throw new Error(`the service exited early:\n${output}`)
    await new Promise((resolve) => setTimeout(resolve, 5))
  }
  if (health === undefined || marks.active === undefined || marks.dbReady === undefined) {
    child.kill("SIGKILL")
    throw new Error(`no /health 200 or ACTIVE within 120 s:\n${output}`)
  }
  if (options.whileActive !== undefined) {
    try {
      await options.whileActive(child.pid!, port)
    } catch (error) {
      child.kill("SIGKILL")
      throw error
    }
  }
  const stopAt = performance.now()
  child.kill("SIGTERM")
  const code = await exited
  if (code !== 0) throw new Error(`exit code ${code} on SIGTERM:\n${output}`)
  return { health, dbReady: marks.dbReady, active: marks.active, exit: performance.now() - stopAt }
}

/** Spawn → exit 1 on a missing variable: the cost of loading the modules. */
const loadOnce = async (): Promise<number> => {
  const t0 = performance.now()
  const child = spawn(process.execPath, [path.join(root, ENTRY)], {
    cwd: root,
    env: { PATH: baseEnv.PATH, HOME: baseEnv.HOME, LOG_FORMAT: "json" },
    stdio: "ignore"
  })
  await new Promise((resolve) => child.once("exit", resolve))
  return performance.now() - t0
}

const fmt = spread

const main = async () => {
  const rows: Array<[string, Array<number>, Array<number>, Array<number>, Array<number>]> = []

  const load: Array<number> = []
  for (let i = 0; i < RUNS; i++) load.push(await loadOnce())
  rows.push(["module loading (exit on missing variable)", load, [], [], []])

  // External PostgreSQL: a server of our own, a fresh database per run.
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "zimage-startup-"))
  fs.chmodSync(dir, 0o755)
  const server = await acquireServer({ fromEnv: false, unsafeFast: true })
  try {
    const external: Array<Run> = []
    for (let i = 0; i < RUNS; i++) {
      external.push(await startOnce({ DATABASE_URL: await createDatabase(server, `bench_${i}`) }))
    }
    rows.push(row("external PostgreSQL (fresh database, migrations run)", external))
    const restart: Array<Run> = []
    for (let i = 0; i < RUNS; i++) restart.push(await startOnce({ DATABASE_URL: server.urlFor("bench_0") }))
    rows.push(row("external PostgreSQL (restart, already migrated)", restart))

    // Embedded: the first start runs initdb; later starts reuse the directory.
    const embeddedDir = path.join(dir, "embedded")
    const first = await startOnce({ EMBEDDED_PG_DIR: embeddedDir })
    rows.push(row("embedded PostgreSQL, first start (initdb)", [first]))
    const again: Array<Run> = []
    for (let i = 0; i < RUNS; i++) again.push(await startOnce({ EMBEDDED_PG_DIR: embeddedDir }))
    rows.push(row("embedded PostgreSQL, restart", again))
  } finally {
    await server.close()
    fs.rmSync(dir, { recursive: true, force: true })
  }

  const header = ["case", "→ /health 200", "→ [DB] ready", "→ ACTIVE", "SIGTERM → exit"]
  const lines = rows.map(([name, ...columns]) => [name, ...columns.map(fmt)])
  const widths = header.map((h, i) => Math.max(h.length, ...lines.map((l) => l[i]!.length)))
  const print = (cells: ReadonlyArray<string>) => console.log(cells.map((c, i) => c.padEnd(widths[i]!)).join(" | "))
  console.log(
    `startup of ${ENTRY}: median (min–max) of ${RUNS} runs, Node ${process.version}, ${os.cpus().length} CPUs`
  )
  print(header)
  print(widths.map((w) => "-".repeat(w)))
  for (const line of lines) print(line)
}

const row = (
  name: string,
  runs: ReadonlyArray<Run>
): [string, Array<number>, Array<number>, Array<number>, Array<number>] => [
  name,
  runs.map((r) => r.health),
  runs.map((r) => r.dbReady),
  runs.map((r) => r.active),
  runs.map((r) => r.exit)
]

/** The production bundle (scripts/build.ts) in `<root>/.bench-dist`, removed afterwards. */
const bundle = async () => {
  const started = performance.now()
  const entry = await buildBundle(".bench-dist")
  console.log(
    `bundled in ${(performance.now() - started).toFixed(0)} ms: ${path.relative(root, entry)} ${
      (fs.statSync(entry).size / 1024).toFixed(0)
    } KiB`
  )
  return {
    entry: path.relative(root, entry),
    dispose: () => fs.rmSync(path.dirname(entry), { recursive: true, force: true })
  }
}

if (import.meta.main) {
  await main()
  if (process.env.BUNDLE === "1") {
    const bundled = await bundle()
    try {
      ENTRY = bundled.entry
      await main()
    } finally {
      bundled.dispose()
    }
  }
}
