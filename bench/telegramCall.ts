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
 *     node bench/telegramCall.ts [calls=20000] [concurrency=16] [rounds=3]
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

const MODES = ["grammy", "service"] as const
type Mode = (typeof MODES)[number]

const TEXT = "Привет! Опишите картинку, и я её нарисую."
const MARKUP = { inline_keyboard: [[{ text: "🎨 Создать картинку", callback_data: "zimage:start" }]] }
/** Distinct chats written to in turn: each gets a message every couple of seconds, within its pacing. */
const CHATS = 10_000
const chatOf = (seq: number) => 1_000_000 + (seq % CHATS)

/** How a handler run waits (dispatch/HandlerRun.ts): a reply, at most 5 s in line. */
const handlerWaits: SendWaits = { own: false, maxWaitMillis: 5_000, around: (wait) => wait }

/** `calls` sendMessage calls, `concurrency` at a time, through `send`. */
const closedLoop = (send: (chatId: number) => Promise<unknown>, concurrency: number) => async (count: number) => {
  let next = 0
  const worker = async () => {
    while (next < count) await send(chatOf(next++))
  }
  await Promise.all(Array.from({ length: concurrency }, worker))
}

const grammyRun = (apiRoot: string, token: string, concurrency: number) => {
  const api = new Api(token, {
    apiRoot,
    timeoutSeconds: 3600,
    fetch: BotApiTransport.make().fetch as unknown as typeof fetch
  })
  return closedLoop((chatId) => api.sendMessage(chatId, TEXT, { reply_markup: MARKUP }), concurrency)
}

const serviceRun = async (apiRoot: string, token: string, databaseUrl: string, concurrency: number) => {
  const config = testConfig({ TELEGRAM_API_ROOT: apiRoot, TELEGRAM_BOT_TOKEN: token, TELEGRAM_PACING: "true" })
  const runtime = ManagedRuntime.make(
    Telegram.layer.pipe(
      Layer.provide(Layer.succeed(AppConfig, config)),
      Layer.provide(Layer.orDie(PgClient.layer({ url: Redacted.make(databaseUrl), maxConnections: 2 })))
    )
  )
  const telegram = await runtime.runPromise(Effect.service(Telegram))
  // The lanes are fibers (as the dispatcher's workers are), not a promise per call.
  return (count: number) => {
    let next = 0
    const lane = Effect.gen(function*() {
      while (next < count) {
        const chatId = chatOf(next++)
        yield* telegram.sendMessage({ chat_id: chatId, text: TEXT, reply_markup: MARKUP }).pipe(
          Effect.provideService(SendWaits, handlerWaits),
          Effect.provideService(ConversingChat, chatId)
        )
      }
    })
    return runtime.runPromise(
      Effect.forEach(Array.from({ length: concurrency }), () => lane, { concurrency: "unbounded", discard: true })
    )
  }
}

/** The child: prints CPU µs per call. */
const child = async (
  mode: Mode,
  apiRoot: string,
  token: string,
  databaseUrl: string,
  calls: number,
  concurrency: number
) => {
  const run = mode === "grammy"
    ? grammyRun(apiRoot, token, concurrency)
    : await serviceRun(apiRoot, token, databaseUrl, concurrency)
  await run(Math.min(2000, calls))
  const cpu = process.cpuUsage()
  const started = performance.now()
  await run(calls)
  const used = process.cpuUsage(cpu)
  const seconds = (performance.now() - started) / 1000
  process.stdout.write(
    JSON.stringify({ cpuMicrosPerCall: (used.user + used.system) / calls, callsPerSecond: calls / seconds }) + "\n"
  )
  process.exit(0)
}

const parent = async (calls: number, concurrency: number, rounds: number) => {
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
  const results: Record<string, Array<{ cpu: number; rate: number }>> = {}
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
            String(concurrency)
          ], { stdio: ["ignore", "pipe", "inherit"] })
          let out = ""
          proc.stdout.on("data", (chunk: Buffer) => (out += chunk.toString()))
          proc.on("exit", (code) => (code === 0 ? resolve(out) : reject(new Error(`${mode} exited ${code}`))))
        })
        const result = JSON.parse(output) as { cpuMicrosPerCall: number; callsPerSecond: number }
        ;(results[mode] ??= []).push({ cpu: result.cpuMicrosPerCall, rate: result.callsPerSecond })
        process.stdout.write(
          `round ${round} ${mode.padEnd(8)} ${result.cpuMicrosPerCall.toFixed(1)} µs CPU/call, ${
            result.callsPerSecond.toFixed(0)
          } calls/s\n`
        )
      }
    }
  } finally {
    await Effect.runPromise(Scope.close(scope, Exit.void))
    await withDb(adminUrl, (db) => db.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`))
  }
  process.stdout.write(`\n${calls} sendMessage calls, ${concurrency} at a time; client CPU per call (all rounds):\n`)
  for (const mode of MODES) {
    const runs = results[mode] ?? []
    process.stdout.write(
      `${mode.padEnd(8)} ${runs.map((r) => r.cpu.toFixed(1)).join(" / ")} µs   (${
        runs.map((r) => r.rate.toFixed(0)).join(" / ")
      } calls/s)\n`
    )
  }
  const median = (mode: Mode) => {
    const sorted = (results[mode] ?? []).map((r) => r.cpu).sort((a, b) => a - b)
    return sorted[Math.floor(sorted.length / 2)] ?? Number.NaN
  }
  process.stdout.write(
    `our wrapper (median service − median grammy): ${(median("service") - median("grammy")).toFixed(1)} µs\n`
  )
  process.exit(0)
}

const args = process.argv.slice(2)
if (args[0] === "child") {
  await child(args[1] as Mode, args[2]!, args[3]!, args[4]!, Number(args[5]), Number(args[6]))
} else {
  await parent(Number(args[0] ?? 20_000), Number(args[1] ?? 16), Number(args[2] ?? 3))
}
