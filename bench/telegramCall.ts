/**
 * Micro-benchmark of one Bot API call through the whole Telegram service:
 * the client process's CPU per `Telegram.sendMessage` (our Effect wrapper:
 * span, blocked-chat bookkeeping, flood gate, timeout, result check,
 * metrics, 429 retry policy; then grammY and `BotApiTransport.ts`), next to
 * the same call made with grammY's `Api` on the same transport and nothing
 * else (the floor `bench/botApiTransport.ts` measures).
 *
 * The `service` child builds the real `Telegram.layer` (production pacing,
 * a PostgreSQL database of its own for `BlockedChats`) and calls it as a
 * handler does: `ConversingChat` set to the chat replied to (no blocked-chat
 * lookup) and the handler's `SendWaits` (a reply, not the bot's own send).
 * Both children write to a ring of distinct chats, so the gate never holds a
 * call back. The fake Bot API (test/fakes/FakeTelegram.ts) runs in this
 * process; each measurement is a child process of its own (so only the
 * client's CPU is counted), and the two take turns (A, B, A, B…) because the
 * machine is noisy.
 *
 *   BENCH_DATABASE_URL=postgres://postgres@127.0.0.1:5432/test \
 *     node bench/telegramCall.ts [calls=20000] [load=16] [rounds=3]
 *
 * `load`: a number of lanes (closed loop: each sends its next call when the
 * last is answered), or `@rate` (open loop: a call started every 1/rate s, as
 * updates arrive; the closed loop's figure moves with its throughput, since a
 * faster client finds the loopback peer busy more often and its socket writes
 * cost less system time).
 *
 * `BENCH_CHILD_OPTIONS` adds Node options to the children (e.g. `--cpu-prof --cpu-prof-dir=/tmp/prof`).
 */
import { PgClient } from "@effect/sql-pg"
import { Effect, Exit, Layer, ManagedRuntime, Redacted, Scope } from "effect"
import { SqlClient } from "effect/sql/SqlClient"
import { Api } from "grammy"
import { spawn } from "node:child_process"
import { randomBytes } from "node:crypto"
import { fileURLToPath } from "node:url"
import { AppConfig } from "../src/platform/AppConfig.ts"
import * as BotApiTransport from "../src/telegram/BotApiTransport.ts"
import { ConversingChat, migration, SendWaits, Telegram } from "../src/telegram/Telegram.ts"
import * as FakeTelegram from "../test/fakes/FakeTelegram.ts"
import { testConfig } from "../test/support/TestConfig.ts"
import { withDb } from "./pg.ts"
import { measureCalls } from "./machine.ts"

const MODES = ["grammy", "service"] as const
type Mode = (typeof MODES)[number]

const TEXT = "Привет! Опишите картинку, и я её нарисую."
const MARKUP = { inline_keyboard: [[{ text: "🎨 Создать картинку", callback_data: "zimage:start" }]] }
/** Distinct chats written to in turn: each gets a message every couple of seconds, within its pacing. */
const CHATS = 10_000
const chatOf = (seq: number) => 1_000_000 + (seq % CHATS)

/** How a handler run waits (dispatch/HandlerRun.ts): a reply, at most 5 s in line. */
const handlerWaits: SendWaits = { own: false, maxWaitMillis: 5_000, around: (wait) => wait }

/**
 * How the calls are made: `concurrency` at a time, each lane sending its next
 * call when its last one is answered (closed loop), or, with `rate`, a call
 * started every 1/rate s whatever the answers (open loop, as updates come in).
 */
interface Load {
  readonly concurrency: number
  readonly rate?: number | undefined
}

/** `count` calls of `send` to `chatOf(0…count-1)` at `rate` a second. */
const openLoop = (send: (chatId: number) => Promise<unknown>, rate: number) => (count: number) =>
  new Promise<void>((resolve, reject) => {
    const started = performance.now()
    let next = 0
    let answered = 0
    const tick = () => {
      const due = Math.min(count, Math.floor(((performance.now() - started) / 1000) * rate) + 1)
      for (; next < due; next++) {
        send(chatOf(next)).then(() => ++answered === count && resolve(), reject)
      }
      if (next < count) setTimeout(tick, 1)
    }
    tick()
  })

/** `count` calls of `send`, `concurrency` at a time. */
const closedLoop = (send: (chatId: number) => Promise<unknown>, concurrency: number) => async (count: number) => {
  let next = 0
  const worker = async () => {
    while (next < count) await send(chatOf(next++))
  }
  await Promise.all(Array.from({ length: concurrency }, worker))
}

const grammyRun = (apiRoot: string, token: string, load: Load) => {
  const api = new Api(token, {
    apiRoot,
    timeoutSeconds: 3600,
    fetch: BotApiTransport.make().fetch as unknown as typeof fetch
  })
  const send = (chatId: number) => api.sendMessage(chatId, TEXT, { reply_markup: MARKUP })
  return load.rate === undefined ? closedLoop(send, load.concurrency) : openLoop(send, load.rate)
}

const serviceRun = async (apiRoot: string, token: string, databaseUrl: string, load: Load) => {
  const config = testConfig({ TELEGRAM_API_ROOT: apiRoot, TELEGRAM_BOT_TOKEN: token, TELEGRAM_PACING: "true" })
  const runtime = ManagedRuntime.make(
    Telegram.layer.pipe(
      Layer.provide(Layer.succeed(AppConfig, config)),
      Layer.provide(Layer.orDie(PgClient.layer({ url: Redacted.make(databaseUrl), maxConnections: 2 })))
    )
  )
  const telegram = await runtime.runPromise(Effect.service(Telegram))
  const send = (chatId: number) =>
    telegram.sendMessage({ chat_id: chatId, text: TEXT, reply_markup: MARKUP }).pipe(
      Effect.provideService(SendWaits, handlerWaits),
      Effect.provideService(ConversingChat, chatId)
    )
  // Open loop: a fiber per call, as the dispatcher runs each update in one.
  if (load.rate !== undefined) return openLoop((chatId) => runtime.runPromise(send(chatId)), load.rate)
  // Closed loop: the lanes are fibers (as the dispatcher's workers are), not a promise per call.
  return (count: number) => {
    let next = 0
    const lane = Effect.gen(function*() {
      while (next < count) yield* send(chatOf(next++))
    })
    return runtime.runPromise(
      Effect.forEach(Array.from({ length: load.concurrency }), () => lane, { concurrency: "unbounded", discard: true })
    )
  }
}

/** The child: prints CPU µs per call (user and system). */
const child = async (mode: Mode, apiRoot: string, token: string, databaseUrl: string, calls: number, load: Load) => {
  const run = mode === "grammy"
    ? grammyRun(apiRoot, token, load)
    : await serviceRun(apiRoot, token, databaseUrl, load)
  process.stdout.write(
    JSON.stringify(await measureCalls(run, calls)) + "\n"
  )
  process.exit(0)
}

/** "16" (closed loop, 16 lanes) or "@1000" (open loop, 1000 calls a second). */
const loadOf = (spec: string): Load =>
  spec.startsWith("@") ? { concurrency: 0, rate: Number(spec.slice(1)) } : { concurrency: Number(spec) }

const describeLoad = (load: Load) =>
  load.rate === undefined ? `${load.concurrency} at a time` : `open loop at ${load.rate}/s`

interface Run {
  readonly cpu: number
  readonly user: number
  readonly rate: number
}

const parent = async (calls: number, loadSpec: string, rounds: number) => {
  const adminUrl = process.env.BENCH_DATABASE_URL ?? "postgres://postgres@127.0.0.1:5432/test"
  const name = `zb_call_${randomBytes(4).toString("hex")}`
  const databaseUrl = (() => {
    const url = new URL(adminUrl)
    url.pathname = `/${name}`
    return url.href
  })()
  await withDb(adminUrl, (db) => db.query(`CREATE DATABASE ${name}`))
  await withDb(databaseUrl, (db) => db.run((sql) => Effect.provideService(migration, SqlClient, sql)))
  const scope = Effect.runSync(Scope.make())
  const fake = await Effect.runPromise(FakeTelegram.make().pipe(Scope.provide(scope)))
  const apiRoot = fake.env.TELEGRAM_API_ROOT!
  const token = fake.env.TELEGRAM_BOT_TOKEN!
  const script = fileURLToPath(import.meta.url)
  const results: Record<string, Array<Run>> = {}
  try {
    for (let round = 1; round <= rounds; round++) {
      for (const mode of MODES) {
        const output = await new Promise<string>((resolve, reject) => {
          const proc = spawn(process.execPath, [
            "--disable-warning=DEP0040",
            "--disable-warning=DEP0169",
            ...(process.env.BENCH_CHILD_OPTIONS ?? "").split(" ").filter((option) => option !== ""),
            script,
            "child",
            mode,
            apiRoot,
            token,
            databaseUrl,
            String(calls),
            loadSpec
          ], { stdio: ["ignore", "pipe", "inherit"] })
          let out = ""
          proc.stdout.on("data", (chunk: Buffer) => (out += chunk.toString()))
          proc.on("exit", (code) => (code === 0 ? resolve(out) : reject(new Error(`${mode} exited ${code}`))))
        })
        const result = JSON.parse(output) as {
          cpuMicrosPerCall: number
          userMicrosPerCall: number
          callsPerSecond: number
        }
        const run = { cpu: result.cpuMicrosPerCall, user: result.userMicrosPerCall, rate: result.callsPerSecond }
        ;(results[mode] ??= []).push(run)
        process.stdout.write(
          `round ${round} ${mode.padEnd(8)} ${run.cpu.toFixed(1)} µs CPU/call (user ${run.user.toFixed(1)}), ${
            run.rate.toFixed(0)
          } calls/s\n`
        )
      }
    }
  } finally {
    await Effect.runPromise(Scope.close(scope, Exit.void))
    await withDb(adminUrl, (db) => db.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`))
  }
  process.stdout.write(
    `\n${calls} sendMessage calls, ${describeLoad(loadOf(loadSpec))}; client CPU per call (all rounds):\n`
  )
  for (const mode of MODES) {
    const runs = results[mode] ?? []
    process.stdout.write(
      `${mode.padEnd(8)} ${runs.map((r) => r.cpu.toFixed(1)).join(" / ")} µs (user ${
        runs.map((r) => r.user.toFixed(1)).join(" / ")
      })   (${runs.map((r) => r.rate.toFixed(0)).join(" / ")} calls/s)\n`
    )
  }
  const median = (mode: Mode, of: (run: Run) => number) => {
    const sorted = (results[mode] ?? []).map(of).sort((a, b) => a - b)
    return sorted[Math.floor(sorted.length / 2)] ?? Number.NaN
  }
  const gap = (of: (run: Run) => number) => (median("service", of) - median("grammy", of)).toFixed(1)
  process.stdout.write(
    `our wrapper (median service − median grammy): ${gap((r) => r.cpu)} µs, user ${gap((r) => r.user)} µs\n`
  )
  process.exit(0)
}

const args = process.argv.slice(2)
if (args[0] === "child") {
  await child(args[1] as Mode, args[2]!, args[3]!, args[4]!, Number(args[5]), loadOf(args[6]!))
} else {
  await parent(Number(args[0] ?? 20_000), args[1] ?? "16", Number(args[2] ?? 3))
}
