/**
 * Runs `npm run sandbox` (or `node scripts/sandbox.ts`) as a real process
 * for tests: in its own process group, with its output collected, the chat
 * page's address read from the line it prints, and a cleanup that reaches
 * everything it started.
 */
import { type ChildProcess, spawn } from "node:child_process"
import * as path from "node:path"
import { fileURLToPath } from "node:url"

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..")

export interface SandboxProcess {
  readonly child: ChildProcess
  /** The chat page's address, `http://127.0.0.1:<port>/`, once printed. */
  readonly address: Promise<string>
  readonly output: () => string
  readonly exited: Promise<number | string>
  /** SIGKILL to the whole process group (cleanup after a failed test). */
  readonly killAll: () => void
}

/** The line the sandbox prints with the page's address, alone on its line. */
export const ADDRESS_LINE = /^http:\/\/127\.0\.0\.1:\d+\/$/m

export const startSandbox = (
  env: Record<string, string>,
  options: { readonly via?: "node" | "npm"; readonly args?: ReadonlyArray<string> } = {}
): SandboxProcess => {
  const [command, args] = options.via === "npm"
    ? ["npm", ["run", "sandbox", "--silent", "--", ...(options.args ?? [])]]
    : [process.execPath, [path.join(root, "scripts/sandbox.ts"), ...(options.args ?? [])]]
  const child = spawn(command, args, {
    cwd: root,
    env: {
      PATH: `${path.dirname(process.execPath)}${path.delimiter}${process.env.PATH ?? ""}`,
      HOME: process.env.HOME ?? "/tmp",
      SANDBOX_PORT: "0",
      ...env
    },
    stdio: ["ignore", "pipe", "pipe"],
    detached: true
  })
  let output = ""
  const exited = new Promise<number | string>((resolve) => {
    child.once("exit", (code, signal) => resolve(code ?? signal ?? "unknown"))
  })
  const address = new Promise<string>((resolve, reject) => {
    const onData = (chunk: Buffer) => {
      output += chunk.toString("utf8")
      const match = ADDRESS_LINE.exec(output)
      if (match !== null) resolve(match[0])
    }
    child.stdout!.on("data", onData)
    child.stderr!.on("data", onData)
    void exited.then((code) => reject(new Error(`sandbox exited (${code}) before printing its address:\n${output}`)))
  })
  // A sandbox that fails to start is what some tests expect: only those that await the address see it.
  address.catch(() => undefined)
  return {
    child,
    address,
    output: () => output,
    exited,
    killAll: () => {
      try {
        process.kill(-child.pid!, "SIGKILL")
      } catch {
        // already gone
      }
    }
  }
}
