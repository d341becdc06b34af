/**
 * Micro-benchmark of the Bot API transport: the client process's CPU per
 * `sendMessage` made through grammY's `Api`, with each `fetch` grammY can
 * be given: its default (node-fetch), ours (`src/telegram/BotApiTransport.ts`)
 * and Node's global `fetch` (undici).
 *
 * The fake Bot API (test/fakes/FakeTelegram.ts) runs in this process; each
 * measurement is a child process of its own (so only the client's CPU is
 * counted), and the transports take turns (A, B, C, A, B, C…) because the
 * machine is noisy.
 *
 *   node bench/botApiTransport.ts [calls=20000] [concurrency=16] [rounds=3]
 */
import { Effect, Scope } from "effect"
import { Api } from "grammy"
import { spawn } from "node:child_process"
import { fileURLToPath } from "node:url"
import * as BotApiTransport from "../src/telegram/BotApiTransport.ts"
import { measureCalls } from "./machine.ts"
import * as FakeTelegram from "../test/fakes/FakeTelegram.ts"

const TRANSPORTS = ["node-fetch", "transport", "global-fetch"] as const
type Transport = (typeof TRANSPORTS)[number]

const fetchOf = (transport: Transport): typeof fetch | undefined => {
  switch (transport) {
    case "node-fetch":
      return undefined
    case "transport":
      return BotApiTransport.make().fetch as unknown as typeof fetch
    case "global-fetch":
      return globalFetch
  }
}

/**
 * Node's `fetch` refuses grammY's signal (the `abort-controller` polyfill is
 * not a native `AbortSignal`), so it gets a native one that follows it.
 */
const globalFetch = ((url: string, init: RequestInit & { signal?: AbortSignal }) => {
  const controller = new AbortController()
  init.signal?.addEventListener("abort", () => controller.abort())
  return globalThis.fetch(url, { ...init, signal: controller.signal })
}) as typeof fetch

/** The child: `calls` sendMessage calls, `concurrency` at a time; prints CPU µs per call. */
const child = async (transport: Transport, apiRoot: string, token: string, calls: number, concurrency: number) => {
  const customFetch = fetchOf(transport)
  const api = new Api(token, {
    apiRoot,
    timeoutSeconds: 3600,
    ...(customFetch === undefined ? {} : { fetch: customFetch })
  })
  const markup = { inline_keyboard: [[{ text: "🎨 Создать картинку", callback_data: "zimage:start" }]] }
  const run = async (count: number) => {
    let next = 0
    const worker = async (lane: number) => {
      while (next < count) {
        next++
        await api.sendMessage(100 + lane, "Привет! Опишите картинку, и я её нарисую.", { reply_markup: markup })
      }
    }
    await Promise.all(Array.from({ length: concurrency }, (_, lane) => worker(lane)))
  }
  const cost = await measureCalls(run, calls)
  process.stdout.write(
    JSON.stringify({
      transport,
      cpuMicrosPerCall: cost.cpuMicrosPerCall,
      callsPerSecond: cost.callsPerSecond
    }) + "\n"
  )
  process.exit(0)
}

const parent = async (calls: number, concurrency: number, rounds: number) => {
  const scope = Effect.runSync(Scope.make())
  const fake = await Effect.runPromise(FakeTelegram.make().pipe(Scope.provide(scope)))
  const apiRoot = fake.env.TELEGRAM_API_ROOT!
  const token = fake.env.TELEGRAM_BOT_TOKEN!
  const script = fileURLToPath(import.meta.url)
  const results: Record<string, Array<{ cpu: number; rate: number }>> = {}
  for (let round = 1; round <= rounds; round++) {
    for (const transport of TRANSPORTS) {
      const output = await new Promise<string>((resolve, reject) => {
        const proc = spawn(process.execPath, [
          "--disable-warning=DEP0040",
          script,
          "child",
          transport,
          apiRoot,
          token,
          String(calls),
          String(concurrency)
        ], { stdio: ["ignore", "pipe", "inherit"] })
        let out = ""
        proc.stdout.on("data", (chunk: Buffer) => (out += chunk.toString()))
        proc.on("exit", (code) => (code === 0 ? resolve(out) : reject(new Error(`${transport} exited ${code}`))))
      })
      const result = JSON.parse(output) as { cpuMicrosPerCall: number; callsPerSecond: number }
      ;(results[transport] ??= []).push({ cpu: result.cpuMicrosPerCall, rate: result.callsPerSecond })
      process.stdout.write(
        `round ${round} ${transport.padEnd(12)} ${result.cpuMicrosPerCall.toFixed(1)} µs CPU/call, ${
          result.callsPerSecond.toFixed(0)
        } calls/s\n`
      )
    }
  }
  process.stdout.write(`\n${calls} sendMessage calls, ${concurrency} at a time; client CPU per call (all rounds):\n`)
  for (const transport of TRANSPORTS) {
    const runs = results[transport] ?? []
    process.stdout.write(
      `${transport.padEnd(12)} ${runs.map((r) => r.cpu.toFixed(1)).join(" / ")} µs   (${
        runs.map((r) => r.rate.toFixed(0)).join(" / ")
      } calls/s)\n`
    )
  }
  await Effect.runPromise(Scope.close(scope, { _tag: "Success", value: undefined } as never))
  process.exit(0)
}

const args = process.argv.slice(2)
if (args[0] === "child") {
  await child(args[1] as Transport, args[2]!, args[3]!, Number(args[4]), Number(args[5]))
} else {
  await parent(Number(args[0] ?? 20_000), Number(args[1] ?? 16), Number(args[2] ?? 3))
}
