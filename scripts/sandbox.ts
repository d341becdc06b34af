/**
 * `npm run sandbox`: the whole bot on this machine, offline, with no bot
 * token and no Kie key, and a chat page to talk to it in a browser.
 *
 * It starts an embedded PostgreSQL (a throw-away cluster in the temp
 * directory), the test suite's own doubles grown for people (FakeTelegram
 * with its chat page API, FakeKie with the painter), and the real service
 * (`src/main.ts`, the production code; only base URLs differ) in polling
 * mode against them. `--two` starts two instances on the same database: one
 * ACTIVE, one standby, and the faults panel can kill the ACTIVE one.
 *
 * The page's address is printed on a line of its own. Ctrl-C stops the
 * instances, the doubles and the database, and exits 0.
 *
 * Environment: SANDBOX_PORT (the page's port; 0, the default, picks a free
 * one), SANDBOX_INSTANCES (1 or 2; `--two` is 2), SANDBOX_DATABASE_URL (a
 * database to use instead of the embedded server; deliberately not
 * DATABASE_URL, which may name a real bot's database in the shell), SANDBOX_MODEL_STEPS (how many
 * "generating" polls a picture takes; 4).
 */
import { Effect, Exit, Scope } from "effect"
import * as fs from "node:fs"
import type * as http from "node:http"
import * as os from "node:os"
import * as path from "node:path"
import { fileURLToPath } from "node:url"
import * as EmbeddedPostgres from "../src/database/EmbeddedPostgres.ts"
import { FakeKie, localResult } from "../test/fakes/FakeKie.ts"
import { failure, type FakeTelegramShape, make as makeFakeTelegram } from "../test/fakes/FakeTelegram.ts"
import { type ServiceProcess, startService } from "../test/support/ServiceProcess.ts"
import { processEnv, TEST_KIE_KEY } from "../test/support/TestConfig.ts"

const here = path.dirname(fileURLToPath(import.meta.url))
const PAGE = path.join(here, "sandbox", "page.html")
const ACTIVE_LINE = "ACTIVE MODE"

interface Instance {
  readonly name: string
  service: ServiceProcess
  port: number | undefined
  state: "starting" | "running" | "killed" | "exited"
}

const say = (line: string) => process.stdout.write(`${line}\n`)

/** One log line of an instance, shortened for a terminal: level, instance, message. */
const showLog = (name: string) => (line: string) => {
  try {
    const entry = JSON.parse(line) as { level?: string; message?: unknown }
    const parts = Array.isArray(entry.message) ? entry.message : [entry.message]
    const text = parts.map((part) => (typeof part === "string" ? part : JSON.stringify(part))).join(" ")
    say(`  ${name} ${String(entry.level ?? "").padEnd(5)} ${text}`)
  } catch {
    if (line.trim() !== "") say(`  ${name} ${line}`)
  }
}

/** SANDBOX_DATABASE_URL when set (the tests pass a fresh database), else an embedded server of our own. */
const startDatabase = async () => {
  const given = process.env.SANDBOX_DATABASE_URL
  if (given !== undefined && given !== "") return { url: given, close: async () => {} }
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "zimage-sandbox-"))
  fs.chmodSync(dir, 0o755)
  const scope = Effect.runSync(Scope.make())
  const server = await Effect.runPromise(
    EmbeddedPostgres.acquire({ dataDir: path.join(dir, "pg"), unsafeFast: true }).pipe(Scope.provide(scope))
  )
  say(`Database: embedded PostgreSQL in ${dir} (deleted on exit)`)
  return {
    url: server.urlFor("postgres"),
    close: async () => {
      await Effect.runPromise(Scope.close(scope, Exit.void))
      fs.rmSync(dir, { recursive: true, force: true })
    }
  }
}

/** The faults the panel offers: what production meets, queued on the doubles for the next requests. */
const injectFault = (kind: string, kie: FakeKie, telegram: FakeTelegramShape): string | undefined => {
  switch (kind) {
    case "kie402":
      kie.scriptCreate({ error: 402, msg: "Credits insufficient" })
      return "Kie will answer the next createTask with 402 (no credits); the bot then pauses submissions for 2 minutes"
    case "kie429":
      kie.scriptCreate({ error: 429, msg: "Rate limit exceeded" }, { error: 429, msg: "Rate limit exceeded" })
      return "Kie will answer the next 2 createTask with 429 (rate limit)"
    case "kie500":
      kie.scriptCreate({ error: 500, msg: "Internal Error" })
      return "Kie will answer the next createTask with 500"
    case "kieHang":
      kie.scriptCreate({ hang: true })
      return "Kie will take the next createTask and never answer"
    case "kieSlow":
      kie.scriptNextTasks({
        steps: ["waiting", ...Array.from({ length: 60 }, () => "generating" as const), localResult("picture.png")]
      })
      return "Kie will take about 25 s for the next picture: watch the status message tick (every 10 s)"
    case "tg429":
      telegram.failNext("sendMessage", failure.rateLimited(3))
      telegram.failNext("editMessageText", failure.rateLimited(3))
      return "Telegram will answer the next sendMessage and editMessageText with 429 retry_after 3"
    default:
      return undefined
  }
}

/** The local image model: paints every prompt in about two seconds at the 400 ms poll the sandbox sets. */
const startModel = () =>
  FakeKie.start({
    apiKey: TEST_KIE_KEY,
    painter: { shortSide: 512 },
    // Long enough to kill the ACTIVE instance mid-generation (two-instance mode), short enough to watch.
    defaultTask: {
      steps: [
        "waiting",
        ...Array.from({ length: Number(process.env.SANDBOX_MODEL_STEPS ?? 4) }, () => "generating" as const),
        localResult("picture.png")
      ]
    }
  })

/** Copies an instance's log to the terminal as it comes, shortened. */
const followLog = (name: string, service: ServiceProcess) => {
  let shown = 0
  const flush = () => {
    const lines = service.lines()
    for (; shown < lines.length; shown++) showLog(name)(lines[shown]!)
  }
  const timer = setInterval(flush, 200)
  void service.exited.then(() => {
    flush()
    clearInterval(timer)
  })
}

/** The bot's instances: started as child processes of the sandbox, watched through their `/health`. */
class Instances {
  readonly all: Array<Instance> = []
  stopping = false
  private named = 0

  private readonly env: Record<string, string>
  readonly two: boolean

  constructor(env: Record<string, string>, two: boolean) {
    this.env = env
    this.two = two
  }

  /** Starts one more instance, named bot-a, bot-b, … */
  launch(): Instance {
    const name = `bot-${String.fromCharCode(97 + this.named++)}`
    const service = startService({ ...this.env, INSTANCE_ID: name })
    const instance: Instance = { name, service, port: undefined, state: "starting" }
    void service.port().then((port) => {
      instance.port = port
      instance.state = "running"
    }, () => undefined)
    void service.exited.then((code) => {
      if (instance.state !== "killed") instance.state = "exited"
      if (!this.stopping) say(`  ${name} exited (${code})`)
    })
    followLog(name, service)
    this.all.push(instance)
    return instance
  }

  async healthOf(instance: Instance): Promise<{ readonly active?: boolean } | undefined> {
    if (instance.port === undefined || instance.state !== "running") return undefined
    try {
      const response = await fetch(`http://127.0.0.1:${instance.port}/health`, { signal: AbortSignal.timeout(1_000) })
      return (await response.json()) as { active?: boolean }
    } catch {
      return undefined
    }
  }

  /** What the page shows of every instance: name, pid, process state and its `/health`. */
  status() {
    return Promise.all(this.all.map(async (instance) => ({
      name: instance.name,
      pid: instance.service.pid,
      state: instance.state,
      health: (await this.healthOf(instance)) ?? null
    })))
  }

  /** SIGKILLs the instance whose `/health` says ACTIVE (as a crash would); a new standby starts 3 s later. */
  async killActive(): Promise<string> {
    if (!this.two) return "kill needs the two-instance mode (npm run sandbox -- --two)"
    const healths = await Promise.all(this.all.map((i) => this.healthOf(i)))
    const active = this.all.find((_, index) => healths[index]?.active === true)
    if (active === undefined) return "no ACTIVE instance to kill"
    active.state = "killed"
    active.service.killAll()
    setTimeout(() => {
      if (!this.stopping) this.launch()
    }, 3_000)
    return `killed ${active.name} (SIGKILL); the standby takes over; a new standby starts in 3 s`
  }

  /** SIGTERM to all, a bounded wait for their drain, then SIGKILL to whatever is left. */
  async stop(): Promise<void> {
    this.stopping = true
    for (const instance of this.all) instance.service.kill("SIGTERM")
    const exited = Promise.all(this.all.map((i) => i.service.exited))
    await Promise.race([exited, new Promise((resolve) => setTimeout(resolve, 15_000))])
    for (const instance of this.all) instance.service.killAll()
  }

  /** Resolves with the first instance that logs it became ACTIVE. */
  leader(): Promise<Instance> {
    return Promise.any(this.all.map((i) => i.service.waitForLine((l) => l.includes(ACTIVE_LINE), 90_000).then(() => i)))
  }
}

/** The page, the instances' status and the faults panel, served on the fake Bot API's port. */
const pageRoutes = (instances: () => Instances | undefined, fault: (kind: string) => Promise<string | undefined>) => {
  const pageHtml = fs.readFileSync(PAGE, "utf8")
  return async (req: http.IncomingMessage, res: http.ServerResponse, url: URL): Promise<boolean> => {
    const json = (status: number, body: unknown) => {
      res.writeHead(status, { "content-type": "application/json", "cache-control": "no-store" })
      res.end(JSON.stringify(body))
    }
    if (req.method === "GET" && (url.pathname === "/" || url.pathname === "/index.html")) {
      res.writeHead(200, { "content-type": "text/html; charset=utf-8", "cache-control": "no-store" })
      res.end(pageHtml)
    } else if (req.method === "GET" && url.pathname === "/sandbox/status") {
      json(200, { instances: (await instances()?.status()) ?? [], twoInstances: instances()?.two ?? false })
    } else if (req.method === "POST" && url.pathname === "/sandbox/fault") {
      const kind = url.searchParams.get("kind") ?? ""
      const done = await fault(kind)
      json(done === undefined ? 400 : 200, { done: done ?? `unknown fault ${kind}` })
    } else return false
    return true
  }
}

/** What to undo on the way out, newest first: the instances, the doubles, the database. */
const cleanups: Array<() => Promise<void>> = []
const cleanUp = async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup().catch(() => undefined)
}

const main = async () => {
  const two = process.argv.includes("--two") || process.env.SANDBOX_INSTANCES === "2"
  say("Starting the sandbox: embedded PostgreSQL, a local Bot API, a local image model…")
  const database = await startDatabase()
  cleanups.push(database.close)
  const kie = await startModel()
  cleanups.push(() => kie.close())
  const telegramScope = Effect.runSync(Scope.make())
  cleanups.push(() => Effect.runPromise(Scope.close(telegramScope, Exit.void)))
  const ready: { instances?: Instances; telegram?: FakeTelegramShape } = {}
  const fault = async (kind: string) =>
    kind === "kill" ? ready.instances?.killActive() : injectFault(kind, kie, ready.telegram!)
  const telegram = await Effect.runPromise(
    makeFakeTelegram({ routes: pageRoutes(() => ready.instances, fault), port: Number(process.env.SANDBOX_PORT ?? 0) })
      .pipe(Scope.provide(telegramScope))
  )
  ready.telegram = telegram
  const instances = new Instances({
    ...processEnv,
    TELEGRAM_API_ROOT: telegram.apiRoot,
    KIE_BASE_URL: kie.url,
    KIE_UPLOAD_BASE_URL: kie.url,
    DATABASE_URL: database.url,
    KIE_POLL_INTERVAL_MS: "400",
    // A hung Kie request (faults panel) gives up in seconds, not the default 30 s, so its effect shows.
    KIE_REQUEST_TIMEOUT_MS: "8000",
    LOG_LEVEL: "info"
  }, two)
  ready.instances = instances
  cleanups.push(() => instances.stop())

  instances.launch()
  if (two) instances.launch()
  const leader = await instances.leader()
  await leader.service.port()
  // Let the startup log reach the terminal first, so the address is the last thing on screen.
  await new Promise((resolve) => setTimeout(resolve, 300))
  say("")
  say("The sandbox is running. Open the chat page:")
  say(`${telegram.apiRoot}/`)
  say("Press Ctrl-C to stop.")
}

/**
 * Ctrl-C (or SIGTERM): stop everything and exit 0. Repeats are ignored: under `npm run`, one Ctrl-C
 * arrives twice (from the terminal and forwarded by npm). The instances' stop is bounded (15 s).
 */
let stopping = false
const stop = async () => {
  if (stopping) return
  stopping = true
  say("Stopping the sandbox…")
  await cleanUp()
  say("Sandbox stopped.")
  process.exit(0)
}
process.on("SIGINT", () => void stop())
process.on("SIGTERM", () => void stop())

main().catch(async (error) => {
  process.stderr.write(`sandbox failed: ${error instanceof Error ? error.stack : String(error)}\n`)
  await cleanUp()
  process.exit(1)
})
