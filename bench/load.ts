/**
 * Load generation: open loop at a fixed offered rate (latency counted from
 * each request's scheduled send time, so a stall is not hidden by sending
 * less: no coordinated omission) and closed loop with N concurrent senders.
 * Every loop is bounded in count and in time.
 */
import * as http from "node:http"
import { performance } from "node:perf_hooks"

/**
 * One operation; resolves `"ok"` on success, else a short reason (an HTTP
 * status, an error code). `scheduledAt` (performance.now() time) is when it
 * was due: its latency is counted from then.
 */
export type Op = (i: number, scheduledAt: number) => Promise<string>

export interface LoadResult {
  readonly attempted: number
  readonly ok: number
  /** Reasons of the failures, counted. */
  readonly failures: Readonly<Record<string, number>>
  /** Latency of every successful operation, ms. */
  readonly latencies: Array<number>
  /** From the first scheduled send to the last completion, ms. */
  readonly elapsedMs: number
}

export const throughput = (result: LoadResult) => (result.ok * 1000) / result.elapsedMs

export const failureCount = (result: LoadResult) => Object.values(result.failures).reduce((a, b) => a + b, 0)

export const failureText = (result: LoadResult) => {
  const entries = Object.entries(result.failures)
  return entries.length === 0 ? "0 errors" : entries.map(([reason, n]) => `${n}× ${reason}`).join(", ")
}

const collector = () => {
  const latencies: Array<number> = []
  const failures: Record<string, number> = {}
  let ok = 0
  return {
    record: (outcome: string, latency: number) => {
      if (outcome === "ok") {
        ok++
        latencies.push(latency)
      } else {
        failures[outcome] = (failures[outcome] ?? 0) + 1
      }
    },
    result: (attempted: number, elapsedMs: number): LoadResult => ({ attempted, ok, failures, latencies, elapsedMs })
  }
}

const guarded = (op: Op, i: number, scheduledAt: number): Promise<string> =>
  op(i, scheduledAt).catch((error: unknown) =>
    `error ${error instanceof Error ? error.message.slice(0, 60) : String(error)}`
  )

export interface OpenLoopOptions {
  readonly rate: number
  readonly seconds: number
  /** Over this many operations in flight, a due send is dropped and counted as `dropped (overload)`. */
  readonly maxInFlight?: number
  /** How long to wait for the last operations after the last send. */
  readonly drainMs?: number
}

/** Sends operation i at `start + i / rate`, whatever happened to the earlier ones. */
export const openLoop = (op: Op, options: OpenLoopOptions): Promise<LoadResult> => {
  const total = Math.max(1, Math.round(options.rate * options.seconds))
  const interval = 1000 / options.rate
  const maxInFlight = options.maxInFlight ?? 5_000
  const drainMs = options.drainMs ?? 15_000
  const stats = collector()
  return new Promise((resolve) => {
    const start = performance.now() + 2
    let next = 0
    let inFlight = 0
    let lastEnd = start
    let finished = false
    const finish = () => {
      if (finished) return
      finished = true
      clearTimeout(drainTimer)
      for (let i = 0; i < inFlight; i++) stats.record(`unfinished ${drainMs} ms after the last send`, 0)
      resolve(stats.result(total, Math.max(1, lastEnd - start)))
    }
    let drainTimer: NodeJS.Timeout | undefined
    const maybeDone = () => {
      if (next >= total && inFlight === 0) finish()
    }
    const tick = () => {
      const now = performance.now()
      while (next < total && start + next * interval <= now) {
        const scheduled = start + next * interval
        const i = next++
        if (inFlight >= maxInFlight) {
          stats.record("dropped (overload)", 0)
          continue
        }
        inFlight++
        void guarded(op, i, scheduled).then((outcome) => {
          const end = performance.now()
          inFlight--
          lastEnd = Math.max(lastEnd, end)
          if (!finished) stats.record(outcome, end - scheduled)
          maybeDone()
        })
      }
      if (next < total) {
        setTimeout(tick, Math.max(0, Math.min(1, start + next * interval - performance.now())))
      } else {
        drainTimer = setTimeout(finish, drainMs)
        maybeDone()
      }
    }
    setTimeout(tick, 2)
  })
}

export interface ClosedLoopOptions {
  readonly concurrency: number
  readonly seconds: number
  /** Stop after this many operations even if time is left. */
  readonly maxOps?: number
}

/** `concurrency` senders, each sending the next operation as soon as its last one completed. */
export const closedLoop = async (op: Op, options: ClosedLoopOptions): Promise<LoadResult> => {
  const stats = collector()
  const maxOps = options.maxOps ?? 10_000_000
  const start = performance.now()
  const end = start + options.seconds * 1000
  let next = 0
  const sender = async () => {
    while (performance.now() < end && next < maxOps) {
      const i = next++
      const sent = performance.now()
      const outcome = await guarded(op, i, sent)
      stats.record(outcome, performance.now() - sent)
    }
  }
  await Promise.all(Array.from({ length: options.concurrency }, sender))
  return stats.result(next, performance.now() - start)
}

/** Sums results of rounds of the same kind. */
export const merge = (results: ReadonlyArray<LoadResult>): LoadResult => {
  const failures: Record<string, number> = {}
  for (const r of results) for (const [k, v] of Object.entries(r.failures)) failures[k] = (failures[k] ?? 0) + v
  return {
    attempted: results.reduce((a, r) => a + r.attempted, 0),
    ok: results.reduce((a, r) => a + r.ok, 0),
    failures,
    latencies: results.flatMap((r) => r.latencies),
    elapsedMs: results.reduce((a, r) => a + r.elapsedMs, 0)
  }
}

/**
 * Runs the contenders one after the other, `rounds` times, alternating which
 * goes first, and merges each one's rounds: the two figures share the same
 * stretches of machine time, so slow moments of the machine hit both.
 */
export const interleave = async (
  rounds: number,
  contenders: ReadonlyArray<(round: number) => Promise<LoadResult>>
): Promise<Array<LoadResult>> => {
  const results = contenders.map(() => [] as Array<LoadResult>)
  for (let round = 0; round < rounds; round++) {
    const order = contenders.map((_, i) => i)
    if (round % 2 === 1) order.reverse()
    for (const i of order) results[i]!.push(await contenders[i]!(round))
  }
  return results.map(merge)
}

/** A keep-alive HTTP client that POSTs JSON bodies to one URL. */
export const jsonPoster = (url: string, headers: Record<string, string>, maxSockets: number) => {
  const agent = new http.Agent({ keepAlive: true, maxSockets, maxFreeSockets: maxSockets })
  const target = new URL(url)
  if (target.hostname !== "127.0.0.1") throw new Error("the bench only sends to 127.0.0.1")
  const post = (body: string) =>
    new Promise<string>((resolve) => {
      const request = http.request(
        target,
        {
          method: "POST",
          agent,
          headers: { ...headers, "content-type": "application/json", "content-length": Buffer.byteLength(body) },
          timeout: 10_000
        },
        (response) => {
          response.resume()
          response.on("end", () => resolve(response.statusCode === 200 ? "ok" : `HTTP ${response.statusCode}`))
          response.on("error", () => resolve("response error"))
        }
      )
      request.on("timeout", () => request.destroy(new Error("timeout")))
      request.on("error", (error: NodeJS.ErrnoException) => resolve(`error ${error.code ?? error.message}`))
      request.end(body)
    })
  return { post, close: () => agent.destroy() }
}
