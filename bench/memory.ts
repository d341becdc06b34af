/**
 * The `memory` phase of `npm run bench` (`BENCH_ONLY=memory`): does the
 * ACTIVE instance's memory reach a plateau under steady traffic?
 *
 * When to use: called from `bench/run.ts` with the run's fixtures; it spawns
 * its own ACTIVE instance (webhook mode, the production bundle unless
 * `BENCH_ENTRY` says otherwise) on a fresh database.
 *
 * Details: `BENCH_MEMORY_CHATS` distinct chats (100,000 by default) each send
 * one `/start`, at `BENCH_MEMORY_RATE` a second (300; open loop, so a stall is
 * not hidden by sending less). VmRSS of the service is read every second.
 * Rows: RSS after the warm-up (the first `WARM_UP_SHARE` of the sends), the
 * peak, the slope of RSS over the second half of the sending (least squares,
 * MiB a minute, and the growth from the half's first to its last ten
 * seconds), replies that arrived, latency from a `/start`'s due time to its
 * `sendMessage` at the fake Bot API, and RSS after `IDLE_SECONDS` idle.
 *
 * Gotchas: every distinct chat is new to the service, so whatever it keeps
 * per chat (maps, caches, metric labels) grows here and nowhere else in the
 * bench. RSS includes what V8 has not handed back yet: a slope near zero
 * with a higher peak is the garbage collector's heuristics, a steady slope is
 * a leak. The fake Bot API keeps every call in the bench process; only the
 * service's memory is measured.
 */
import { performance } from "node:perf_hooks"
import type * as FakeTelegram from "../test/fakes/FakeTelegram.ts"
import type { ServiceProcess } from "../test/support/ServiceProcess.ts"
import { failureText, jsonPoster, openLoop } from "./load.ts"
import { processCpuMs, rssOf } from "./machine.ts"
import { latencies, mib } from "./stats.ts"

/** Distinct chats, one `/start` each (`BENCH_MEMORY_CHATS`). */
const CHATS = Math.round(Number(process.env.BENCH_MEMORY_CHATS || 100_000))
/** `/start`s a second (`BENCH_MEMORY_RATE`). */
const RATE = Number(process.env.BENCH_MEMORY_RATE || 300)
/** The share of the sends that count as warm-up. */
const WARM_UP_SHARE = 0.1
/** How long the instance idles after the last reply before the last reading. */
const IDLE_SECONDS = 30
/** How long replies may take after the last send. */
const REPLY_TIMEOUT_MS = 60_000
/** The goals of issue 14. */
const PEAK_GOAL_MIB = 256
const SLOPE_GOAL_MIB_PER_MINUTE = 2
/** First chat id: apart from the other phases' chats. */
const FIRST_CHAT = 10_000_000

/** A service process as `bench/run.ts` spawns it. */
interface Service {
  readonly process: ServiceProcess
  readonly port: number
  readonly webhookUrl: string
}

/** What the phase needs from the bench run (see `bench/run.ts`). */
export interface MemoryFixtures {
  readonly telegram: FakeTelegram.FakeTelegramShape
  readonly newDatabase: (name: string) => Promise<string>
  readonly spawnService: (name: string, env: Record<string, string>, expect: "active" | "passive") => Promise<Service>
  readonly stopService: (service: Service) => Promise<void>
  readonly updateJson: (update: Record<string, unknown>) => string
  readonly startCommand: (chatId: number) => Record<string, unknown>
  readonly webhookSecret: string
  readonly connections: number
  readonly add: (row: {
    figure: string
    state: string
    result: string
    latency: string
    goal: string
    met?: boolean | undefined
  }) => void
  readonly progress: (message: string) => void
}

/** One RSS reading: seconds since the first send, bytes. */
interface Reading {
  readonly t: number
  readonly rss: number
}

/** Least-squares slope of `readings`, bytes per second. */
export const slopeOf = (readings: ReadonlyArray<Reading>): number => {
  const n = readings.length
  if (n < 2) return Number.NaN
  const meanT = readings.reduce((s, r) => s + r.t, 0) / n
  const meanRss = readings.reduce((s, r) => s + r.rss, 0) / n
  let num = 0
  let den = 0
  for (const r of readings) {
    num += (r.t - meanT) * (r.rss - meanRss)
    den += (r.t - meanT) ** 2
  }
  return den === 0 ? Number.NaN : num / den
}

const mean = (values: ReadonlyArray<number>) => values.reduce((a, b) => a + b, 0) / values.length
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms))

/**
 * First `sendMessage` per chat of `chats` since `after`, collected
 * incrementally (`poll` scans only the calls that arrived since the last one).
 */
const replyCollector = (telegram: FakeTelegram.FakeTelegramShape, first: number, count: number, after: number) => {
  const at = new Float64Array(count)
  let found = 0
  let scanned = after
  const poll = () => {
    const calls = telegram.calls()
    for (; scanned < calls.length; scanned++) {
      const call = calls[scanned]!
      if (call.method !== "sendMessage") continue
      const index = (call.params.chat_id as number) - first
      if (index < 0 || index >= count || at[index] !== 0) continue
      at[index] = call.at
      found++
    }
    return found
  }
  return { poll, at, found: () => found }
}

/** Runs the phase and adds its rows. */
export const memory = async (fx: MemoryFixtures) => {
  const seconds = CHATS / RATE
  fx.progress(`memory: ${CHATS} distinct chats send /start at ${RATE}/s (${seconds.toFixed(0)} s), one ACTIVE instance`)
  const url = await fx.newDatabase("memory")
  const service = await fx.spawnService("bench-memory", { DATABASE_URL: url, LEADER_LOCK_KEY: "7400005" }, "active")
  const pid = service.process.pid
  const poster = jsonPoster(service.webhookUrl, { "x-telegram-bot-api-secret-token": fx.webhookSecret }, fx.connections)
  try {
    await service.process.waitForLine((l) => l.includes("ACTIVE_ENTER"), 30_000)
    await sleep(2_000)
    const replies = replyCollector(fx.telegram, FIRST_CHAT, CHATS, fx.telegram.mark())
    const scheduledAt = new Float64Array(CHATS)
    const epochOffset = Date.now() - performance.now()
    const cpuBefore = processCpuMs(pid)
    const started = performance.now()
    const readings: Array<Reading> = []
    let sending = true
    const sampler = (async () => {
      while (sending) {
        readings.push({ t: (performance.now() - started) / 1000, rss: rssOf(pid) })
        replies.poll()
        if (readings.length % 30 === 0) {
          fx.progress(`memory: ${readings.length} s, RSS ${mib(readings.at(-1)!.rss)}, ${replies.found()} replies`)
        }
        await sleep(1_000)
      }
    })()
    const acks = await openLoop(async (i, scheduled) => {
      scheduledAt[i] = scheduled + epochOffset
      return await poster.post(fx.updateJson(fx.startCommand(FIRST_CHAT + i)))
    }, { rate: RATE, seconds, drainMs: 30_000 })
    sending = false
    await sampler
    const sentFor = (performance.now() - started) / 1000
    const replyDeadline = performance.now() + REPLY_TIMEOUT_MS
    while (replies.poll() < CHATS && performance.now() < replyDeadline) await sleep(500)
    const afterReplies = performance.now()
    const cpuPerStart = (processCpuMs(pid) - cpuBefore) / CHATS * 1000
    let idlePeak = 0
    while (performance.now() - afterReplies < IDLE_SECONDS * 1000) {
      idlePeak = Math.max(idlePeak, rssOf(pid))
      await sleep(1_000)
    }
    const idleRss = rssOf(pid)

    const warmUpEnd = seconds * WARM_UP_SHARE
    const afterWarmUp = readings.find((r) => r.t >= warmUpEnd) ?? readings.at(-1)!
    const peak = Math.max(idlePeak, ...readings.map((r) => r.rss))
    const secondHalf = readings.filter((r) => r.t >= sentFor / 2)
    const slope = slopeOf(secondHalf) * 60
    const halfStart = mean(secondHalf.filter((r) => r.t < secondHalf[0]!.t + 10).map((r) => r.rss))
    const halfEnd = mean(secondHalf.filter((r) => r.t > secondHalf.at(-1)!.t - 10).map((r) => r.rss))
    const latency: Array<number> = []
    for (let i = 0; i < CHATS; i++) if (replies.at[i] !== 0) latency.push(replies.at[i]! - scheduledAt[i]!)
    const missing = CHATS - replies.found()
    const state = "ACTIVE"
    const label = `memory: ${CHATS} distinct chats, /start at ${RATE}/s`
    fx.add({
      figure: `${label}: RSS after warm-up (the first ${warmUpEnd.toFixed(0)} s)`,
      state,
      result: mib(afterWarmUp.rss),
      latency: "",
      goal: ""
    })
    fx.add({
      figure: `${label}: peak RSS`,
      state,
      result: `${mib(peak)} (sampled every second, to the end of the idle)`,
      latency: "",
      goal: `≤ ${PEAK_GOAL_MIB} MiB`,
      met: peak <= PEAK_GOAL_MIB * 1024 * 1024
    })
    fx.add({
      figure: `${label}: RSS slope over the second half of the sending`,
      state,
      result: `${(slope / 1024 / 1024).toFixed(2)} MiB/min (least squares over ${secondHalf.length} readings); ` +
        `${mib(halfStart)} → ${mib(halfEnd)} (${((halfEnd / halfStart - 1) * 100).toFixed(1)} %)`,
      latency: "",
      goal: `≤ ${SLOPE_GOAL_MIB_PER_MINUTE} MiB/min`,
      met: slope / 1024 / 1024 <= SLOPE_GOAL_MIB_PER_MINUTE
    })
    fx.add({
      figure: `${label}: replies arrived; update due → sendMessage at the fake Bot API`,
      state,
      result: `${replies.found()} of ${CHATS}${missing > 0 ? ` (${missing} not within 60 s)` : ""}; webhooks: ${
        failureText(acks)
      }; sending took ${sentFor.toFixed(0)} s; service CPU per /start ${cpuPerStart.toFixed(0)} µs`,
      latency: latencies(latency),
      goal: "all",
      met: missing === 0
    })
    fx.add({
      figure: `${label}: RSS after ${IDLE_SECONDS} s idle`,
      state,
      result: mib(idleRss),
      latency: "",
      goal: `≤ ${PEAK_GOAL_MIB} MiB`,
      met: idleRss <= PEAK_GOAL_MIB * 1024 * 1024
    })
  } finally {
    poster.close()
    await fx.stopService(service)
  }
}
