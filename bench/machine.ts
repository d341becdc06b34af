/** What the bench ran on, and the memory of a process. */
import * as fs from "node:fs"
import * as os from "node:os"

export interface Machine {
  readonly cpu: string
  readonly cores: number
  readonly ramGiB: number
  readonly os: string
  readonly node: string
}

export const machine = (): Machine => {
  let cpu = os.cpus()[0]?.model ?? "unknown CPU"
  try {
    const line = fs.readFileSync("/proc/cpuinfo", "utf8").split("\n").find((l) => l.startsWith("model name"))
    if (line !== undefined) cpu = line.split(":")[1]!.trim()
  } catch {
    // not Linux: keep os.cpus()
  }
  return {
    cpu: cpu.replace(/\s+/g, " "),
    cores: os.availableParallelism(),
    ramGiB: os.totalmem() / 1024 ** 3,
    os: `${os.type()} ${os.release()} ${os.arch()}`,
    node: process.version
  }
}

/** Resident set size of `pid` in bytes (VmRSS in /proc/<pid>/status). */
export const rssOf = (pid: number): number => {
  const status = fs.readFileSync(`/proc/${pid}/status`, "utf8")
  const match = /^VmRSS:\s+(\d+) kB$/m.exec(status)
  if (match === null) throw new Error(`no VmRSS for pid ${pid}`)
  return Number(match[1]) * 1024
}

/** 1-minute load average and the CPU time other processes used, to judge how quiet the machine was. */
export const loadAverage = (): string => os.loadavg().map((l) => l.toFixed(2)).join(" ")

/** CPU time (user + system) `pid` has used so far, ms; /proc clock ticks are 10 ms. */
export const processCpuMs = (pid: number): number => {
  const stat = fs.readFileSync(`/proc/${pid}/stat`, "utf8")
  // Fields after the command name (which may contain spaces): utime is the 14th field, stime the 15th.
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ")
  return (Number(fields[11]) + Number(fields[12])) * 10
}

/**
 * CPU milliseconds used so far by every running `postgres` process on this
 * machine: the database's side of a figure when the database runs here (the
 * service's connections keep their backends for the whole figure). A process
 * that exits meanwhile takes its time with it, so this is a lower bound.
 */
export const postgresCpuMs = (): number => {
  let total = 0
  for (const entry of fs.readdirSync("/proc")) {
    if (!/^\d+$/.test(entry)) continue
    let stat: string
    try {
      stat = fs.readFileSync(`/proc/${entry}/stat`, "utf8")
    } catch {
      continue // exited meanwhile
    }
    const close = stat.lastIndexOf(")")
    if (stat.slice(stat.indexOf("(") + 1, close) !== "postgres") continue
    const fields = stat.slice(close + 2).split(" ")
    total += (Number(fields[11]) + Number(fields[12])) * 10
  }
  return total
}

/** Adds up the CPU time a reading function reports across the stretches `during` wraps. */
export const cpuTally = (read: () => number) => {
  let total = 0
  return {
    during: async <A>(run: () => Promise<A>): Promise<A> => {
      const before = read()
      try {
        return await run()
      } finally {
        total += read() - before
      }
    },
    total: () => total
  }
}

/** What `measureCalls` reports: this process's CPU per call (all, and user only) and the call rate. */
export interface CallCost {
  readonly cpuMicrosPerCall: number
  readonly userMicrosPerCall: number
  readonly callsPerSecond: number
}

/**
 * Warms `run` up (at most 2,000 calls, so the JIT has settled), then runs
 * `calls` and reports this process's CPU per call: for a micro-benchmark
 * whose other side runs in another process.
 */
export const measureCalls = async (run: (calls: number) => Promise<void>, calls: number): Promise<CallCost> => {
  await run(Math.min(2000, calls))
  const cpu = process.cpuUsage()
  const started = performance.now()
  await run(calls)
  const used = process.cpuUsage(cpu)
  const seconds = (performance.now() - started) / 1000
  return {
    cpuMicrosPerCall: (used.user + used.system) / calls,
    userMicrosPerCall: used.user / calls,
    callsPerSecond: calls / seconds
  }
}
