/**
 * The sandbox as processes: two instances on one database where the faults
 * panel's "kill" SIGKILLs the ACTIVE one while a generation runs and the
 * standby takes over and delivers the picture; and Ctrl-C on `npm run
 * sandbox` stopping everything it started (embedded PostgreSQL included).
 */
import { execFileSync } from "node:child_process"
import * as net from "node:net"
import { Effect, Exit, Scope } from "effect"
import { afterEach, describe, expect, it } from "vitest"
import type { PageState } from "./fakes/ChatPageApi.ts"
import { type SandboxProcess, startSandbox } from "./support/Sandbox.ts"
import { freshDatabaseUrl } from "./support/TestDatabase.ts"

interface Status {
  readonly instances: ReadonlyArray<{
    readonly name: string
    readonly pid: number
    readonly state: string
    readonly health: { readonly active?: boolean; readonly generations?: { readonly submitted?: number } } | null
  }>
}

const ANNA = { chatId: 1001, userId: 1001, name: "Анна", languageCode: "ru" }

/** Polls `read` (real HTTP to the sandbox) until `done` holds; bounded. */
const until = async <A>(read: () => Promise<A>, done: (value: A) => boolean, timeoutMs: number, what: string) => {
  const deadline = Date.now() + timeoutMs
  for (;;) {
    const value = await read()
    if (done(value)) return value
    if (Date.now() > deadline) throw new Error(`${what}: not within ${timeoutMs} ms; last: ${JSON.stringify(value)}`)
    await new Promise((resolve) => setTimeout(resolve, 200))
  }
}

/** Process ids of everything still running whose command line mentions `text`. */
const processesWith = (text: string): Array<string> => {
  const out = execFileSync("ps", ["-eo", "pid,args"], { encoding: "utf8" })
  return out.split("\n").filter((line) => line.includes(text) && !line.includes("ps -eo"))
}

/** The embedded server's directory, from the line the sandbox prints. */
const embeddedDirOf = (sandbox: SandboxProcess): string => {
  const dir = /embedded PostgreSQL in (\S+)/.exec(sandbox.output())?.[1]
  if (dir === undefined) throw new Error(`no embedded database line in:\n${sandbox.output()}`)
  return dir
}

describe("sandbox processes", () => {
  const started: Array<SandboxProcess> = []
  const scope = Effect.runSync(Scope.make())
  afterEach(async () => {
    for (const sandbox of started.splice(0)) sandbox.killAll()
    await Effect.runPromise(Scope.close(scope, Exit.void))
  })

  it(
    "two instances: faults retried, the ACTIVE one killed mid-generation, the standby takes over and delivers",
    async () => {
      const databaseUrl = await Effect.runPromise(freshDatabaseUrl.pipe(Scope.provide(scope)))
      const sandbox = startSandbox(
        { SANDBOX_DATABASE_URL: databaseUrl, SANDBOX_MODEL_STEPS: "25" },
        { args: ["--two"] }
      )
      started.push(sandbox)
      const address = await sandbox.address
      const get = async <A>(p: string) => (await (await fetch(new URL(p, address))).json()) as A
      const post = (p: string, body?: unknown) =>
        fetch(new URL(p, address), { method: "POST", body: JSON.stringify(body ?? {}) }).then((r) => r.json())
      const chat = async () =>
        (await get<PageState>("/chat/state")).chats.find((c) => c.chatId === 1001)?.messages ?? []
      const lastBot = async () => (await chat()).filter((m) => m.from === "bot").at(-1)

      // Faults on the way, from the panel: Telegram's 429 and Kie's 500 are waited out and retried.
      expect(((await post("/sandbox/fault?kind=tg429")) as { done: string }).done).toContain("429")
      expect(((await post("/sandbox/fault?kind=kie500")) as { done: string }).done).toContain("500")
      await post("/chat/message", { ...ANNA, text: "/start" })
      const welcome = await until(lastBot, (m) => m?.buttons !== undefined, 20_000, "welcome")
      await post("/chat/press", { ...ANNA, messageId: welcome!.id, data: "zimage:start" })
      await until(lastBot, (m) => m !== undefined && m.id > welcome!.id, 20_000, "prompt question")
      await post("/chat/message", { ...ANNA, text: "a lighthouse in a storm" })
      const ratios = await until(
        lastBot,
        (m) => m?.buttons?.[0]?.[0]?.data.includes("ratio") === true,
        20_000,
        "ratios"
      )
      await post("/chat/press", { ...ANNA, messageId: ratios!.id, data: "zimage:ratio:1:1" })

      const status = await until(
        () => get<Status>("/sandbox/status"),
        (s) => s.instances.some((i) => i.health?.active === true && i.health.generations?.submitted === 1),
        20_000,
        "a generation submitted to the local model"
      )
      const active = status.instances.find((i) => i.health?.active === true)!
      const answer = (await post("/sandbox/fault?kind=kill")) as { done: string }
      expect(answer.done).toContain(`killed ${active.name}`)

      const after = await until(
        () => get<Status>("/sandbox/status"),
        (s) => s.instances.some((i) => i.name !== active.name && i.health?.active === true),
        40_000,
        "the standby ACTIVE"
      )
      expect(after.instances.find((i) => i.name === active.name)?.state).toBe("killed")
      const picture = await until(lastBot, (m) => m?.kind === "document", 40_000, "the picture after the takeover")
      const photos = (await chat()).filter((m) => m.from === "bot" && m.kind === "photo")
      expect(photos.map((m) => m.caption)).toEqual(["✅ Готово!"])
      expect(picture!.fileName).toMatch(/\.png$/)
      expect(sandbox.output()).toContain("[TELEGRAM] 429 on sendMessage")
      expect(sandbox.output()).toContain("Kie createTask answered 500")
    },
    120_000
  )

  it("Ctrl-C on npm run sandbox stops the instances and the embedded PostgreSQL, leaving nothing running", async () => {
    const sandbox = startSandbox({}, { via: "npm" })
    started.push(sandbox)
    await sandbox.address
    // The embedded postmaster runs on the temp directory the sandbox names.
    const marker = embeddedDirOf(sandbox)
    expect(processesWith(marker).length).toBeGreaterThan(0)
    const status = (await (await fetch(new URL("/sandbox/status", await sandbox.address))).json()) as Status
    const services = status.instances.map((i) => i.pid)
    expect(services.length).toBe(1)
    process.kill(-sandbox.child.pid!, "SIGINT")
    // npm reports a Ctrl-C as 130 (or dies of it), as shells expect; the sandbox itself stopped cleanly.
    expect([0, 130, "SIGINT"]).toContain(await sandbox.exited)
    // npm may exit before the sandbox finished: its last line comes through the shared pipe.
    await until(async () => sandbox.output(), (out) => out.includes("Sandbox stopped."), 20_000, "Sandbox stopped.")
    await until(async () => processesWith(`${marker}`), (left) => left.length === 0, 10_000, "no postgres left")
    const alive = (pid: number) => {
      try {
        process.kill(pid, 0)
        return true
      } catch {
        return false
      }
    }
    expect(services.filter(alive)).toEqual([])
  }, 120_000)

  it("a failed start (the page's port taken) stops the embedded PostgreSQL it started and exits 1", async () => {
    const busy = net.createServer()
    await new Promise<void>((resolve) => busy.listen(0, "127.0.0.1", resolve))
    try {
      const port = (busy.address() as net.AddressInfo).port
      const sandbox = startSandbox({ SANDBOX_PORT: String(port) })
      started.push(sandbox)
      expect(await sandbox.exited).toBe(1)
      expect(sandbox.output()).toContain("EADDRINUSE")
      const marker = embeddedDirOf(sandbox)
      await until(async () => processesWith(marker), (left) => left.length === 0, 10_000, "no postgres left")
    } finally {
      busy.close()
    }
  }, 60_000)
})
