/**
 * Runs `src/main.ts` as a real OS process, for tests that need process
 * boundaries (exit codes, signals, kill -9). Output is collected line by line;
 * waits are bounded and event-driven (a line appears, the process exits).
 */
import { type ChildProcess, spawn } from "node:child_process"
import * as path from "node:path"
import { fileURLToPath } from "node:url"

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..")

export interface ServiceProcess {
  readonly child: ChildProcess
  readonly pid: number
  /** Every line written so far to stdout and stderr. */
  readonly lines: () => ReadonlyArray<string>
  /** Resolves with the first line matching, or rejects after `timeoutMs`. */
  readonly waitForLine: (match: (line: string) => boolean, timeoutMs?: number) => Promise<string>
  /** Resolves with the exit code (or the signal name). */
  readonly exited: Promise<number | string>
  /** The HTTP port, once the "Listening on" line has appeared. */
  readonly port: () => Promise<number>
  /** Signals the spawned process only (with `via: "npm"`, npm, not the service). */
  readonly kill: (signal: NodeJS.Signals) => void
  /** Cleanup: SIGKILL to the spawned process and everything it started (its process group). */
  readonly killAll: () => void
}

export interface StartOptions {
  /**
   * `"node"` (default): `node src/main.ts`, so `pid` is the service itself.
   * `"npm"`: `npm start`, so signals go to npm, which must pass them on.
   * `"npm-dist"`: `npm run start:dist`, Render's start command (the bundle
   * built by `npm run build`).
   */
  readonly via?: "node" | "npm" | "npm-dist" | undefined
  /**
   * With `via: "node"`: the script to run, relative to the repository root
   * (e.g. a bundle such as `dist/main.js`); `src/main.ts` by default.
   */
  readonly entry?: string | undefined
}

export const startService = (env: Record<string, string>, options: StartOptions = {}): ServiceProcess => {
  // npm runs the start script with node_modules/.bin first on PATH, so with the
  // `node` devDependency, as on Render.
  const [command, args] = options.via === "npm"
    ? ["npm", ["start", "--silent"]]
    : options.via === "npm-dist"
    ? ["npm", ["run", "start:dist", "--silent"]]
    : [process.execPath, [path.join(root, options.entry ?? "src/main.ts")]]
  const child = spawn(command, args, {
    cwd: root,
    env: {
      PATH: `${path.dirname(process.execPath)}${path.delimiter}${process.env.PATH ?? ""}`,
      HOME: process.env.HOME ?? "/tmp",
      LOG_FORMAT: "json",
      ...env
    },
    stdio: ["ignore", "pipe", "pipe"],
    // Its own process group, so `killAll` also reaches a service npm failed to stop.
    detached: options.via === "npm" || options.via === "npm-dist"
  })
  const collected: Array<string> = []
  const waiters = new Set<{ match: (line: string) => boolean; resolve: (line: string) => void }>()
  const onData = (buffered: { rest: string }) => (chunk: Buffer) => {
    const text = buffered.rest + chunk.toString("utf8")
    const parts = text.split("\n")
    buffered.rest = parts.pop() ?? ""
    for (const line of parts) {
      collected.push(line)
      for (const waiter of Array.from(waiters)) {
        if (waiter.match(line)) {
          waiters.delete(waiter)
          waiter.resolve(line)
        }
      }
    }
  }
  child.stdout!.on("data", onData({ rest: "" }))
  child.stderr!.on("data", onData({ rest: "" }))
  const exited = new Promise<number | string>((resolve) => {
    child.once("exit", (code, signal) => resolve(code ?? signal ?? "unknown"))
  })

  const waitForLine = (match: (line: string) => boolean, timeoutMs = 30_000) =>
    new Promise<string>((resolve, reject) => {
      const found = collected.find(match)
      if (found !== undefined) return resolve(found)
      const waiter = {
        match,
        resolve: (line: string) => {
          clearTimeout(timer)
          resolve(line)
        }
      }
      const timer = setTimeout(() => {
        waiters.delete(waiter)
        reject(new Error(`no matching line within ${timeoutMs} ms; output:\n${collected.join("\n")}`))
      }, timeoutMs)
      waiters.add(waiter)
      void exited.then((code) => {
        if (waiters.delete(waiter)) {
          clearTimeout(timer)
          reject(new Error(`process exited (${code}) before a matching line; output:\n${collected.join("\n")}`))
        }
      })
    })

  const port = async () => {
    const line = await waitForLine((l) => l.includes("Listening on http://"))
    const match = /:(\d+)\D*$/.exec(JSON.parse(line).message as string)
    return Number(match![1])
  }

  return {
    child,
    pid: child.pid!,
    lines: () => collected,
    waitForLine,
    exited,
    port,
    kill: (signal) => {
      if (child.exitCode === null && child.signalCode === null) child.kill(signal)
    },
    killAll: () => {
      try {
        if (options.via === "npm" || options.via === "npm-dist") process.kill(-child.pid!, "SIGKILL")
        else child.kill("SIGKILL")
      } catch {
        // already gone
      }
    }
  }
}

/** GET a JSON document over loopback. */
export const getJson = async (port: number, path: string): Promise<{ status: number; body: any }> => {
  const response = await fetch(`http://127.0.0.1:${port}${path}`)
  return { status: response.status, body: await response.json() }
}
