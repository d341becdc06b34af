/**
 * A focused measure of the dispatch side's CPU per `/start`: the whole
 * service built in this process (`src/App.ts`, as the end-to-end tests build
 * it) on a fresh database of `BENCH_DATABASE_URL`'s server, the fake Bot API
 * in a child process (its CPU is not counted). Each round stores a backlog of
 * `/start`s from distinct chats straight into the inbox, wakes the
 * dispatcher, and counts this process's CPU until every one is `done`.
 *
 * Run: `BENCH_DATABASE_URL=postgres://postgres@127.0.0.1:5432/test node bench/dispatchPath.ts`
 * (DISPATCH_BENCH_STARTS per round, 2000 by default; DISPATCH_BENCH_ROUNDS, 6).
 * The first round is a warm-up (JIT) and not reported in the median.
 */
import { PgClient } from "@effect/sql-pg"
import { Effect, Exit, Redacted, Scope } from "effect"
import { SqlClient } from "effect/sql/SqlClient"
import { spawn } from "node:child_process"
import { randomBytes } from "node:crypto"
import { createInterface } from "node:readline"
import { CHANNEL } from "../src/inbox/Inbox.ts"
import * as FakeTelegram from "../test/fakes/FakeTelegram.ts"
import { startApp } from "../test/support/TestApp.ts"
import { TEST_WEBHOOK_SECRET } from "../test/support/TestConfig.ts"

if (process.argv[2] === "--fake") {
  // The child: the fake Bot API, its env on stdout, alive until stdin closes.
  await Effect.runPromise(Effect.scoped(Effect.gen(function*() {
    const fake = yield* FakeTelegram.make()
    process.stdout.write(JSON.stringify(fake.env) + "\n")
    yield* Effect.callback<void>((resume) => {
      process.stdin.on("close", () => resume(Effect.void))
      process.stdin.resume()
    })
  })))
  process.exit(0)
}

const adminUrl = process.env.BENCH_DATABASE_URL ?? "postgres://postgres@127.0.0.1:5432/test"
const STARTS = Number(process.env.DISPATCH_BENCH_STARTS ?? 2000)
const ROUNDS = Number(process.env.DISPATCH_BENCH_ROUNDS ?? 6)

const onDatabase = <A, E>(url: string, effect: Effect.Effect<A, E, SqlClient>) =>
  effect.pipe(Effect.provide(PgClient.layer({ url: Redacted.make(url), maxConnections: 1 })), Effect.orDie)

const withDatabase = (url: string, database: string): string => {
  const parsed = new URL(url)
  parsed.pathname = `/${database}`
  return parsed.href
}

const child = spawn(process.execPath, [new URL(import.meta.url).pathname, "--fake"], {
  stdio: ["pipe", "pipe", "inherit"]
})
const fakeEnv: Record<string, string> = await new Promise((resolve) => {
  createInterface({ input: child.stdout! }).once("line", (line) => resolve(JSON.parse(line)))
})

const name = `zb_bench_${randomBytes(5).toString("hex")}`
const url = withDatabase(adminUrl, name)

const program = Effect.gen(function*() {
  yield* onDatabase(
    adminUrl,
    Effect.gen(function*() {
      yield* (yield* SqlClient).unsafe(`CREATE DATABASE ${name}`)
    })
  )
  const scope = yield* Scope.make()
  const env = { ...fakeEnv, DATABASE_URL: url, PORT: "0", TELEGRAM_WEBHOOK_SECRET: TEST_WEBHOOK_SECRET }
  // Built and ACTIVE as the tests' in-process app is.
  yield* startApp(env).pipe(Scope.provide(scope))

  const perStart: Array<number> = []
  yield* onDatabase(
    url,
    Effect.gen(function*() {
      const sql = yield* SqlClient
      for (let round = 0; round < ROUNDS; round++) {
        const base = 10_000_000 + round * STARTS
        const updates = Array.from(
          { length: STARTS },
          (_, i) => FakeTelegram.textMessage({ chatId: base + i, text: "/start", updateId: base + i })
        )
        const cpu0 = process.cpuUsage()
        yield* sql`
          INSERT INTO telegram_updates (update_id, chat_id, user_id, kind, payload, received_at)
          SELECT (u->>'update_id')::bigint, (u#>>'{message,chat,id}')::bigint, (u#>>'{message,from,id}')::bigint,
            'message', u, now()
          FROM jsonb_array_elements(${JSON.stringify(updates)}::jsonb) u`
        yield* sql.unsafe(`NOTIFY ${CHANNEL}`)
        const t0 = Date.now()
        for (;;) {
          yield* Effect.promise(() => new Promise((resolve) => setTimeout(resolve, 50)))
          const [row] = yield* sql<{ left: string }>`
            SELECT count(*)::text AS left FROM telegram_updates WHERE status <> 'done' AND update_id >= ${base}`
          if (row!.left === "0") break
          if (Date.now() - t0 > 120_000) return yield* Effect.die(new Error("the backlog did not finish"))
        }
        const cpu = process.cpuUsage(cpu0)
        const micros = (cpu.user + cpu.system) / STARTS
        const seconds = (Date.now() - t0) / 1000
        if (round > 0) perStart.push(micros)
        console.log(
          `round ${round}${round === 0 ? " (warm-up)" : ""}: ${micros.toFixed(0)} µs CPU per /start (user ${
            (cpu.user / STARTS).toFixed(0)
          }, system ${(cpu.system / STARTS).toFixed(0)}), ${(STARTS / seconds).toFixed(0)}/s`
        )
      }
    })
  )
  const sorted = [...perStart].sort((a, b) => a - b)
  console.log(
    `median ${sorted[Math.floor(sorted.length / 2)]!.toFixed(0)} µs CPU per /start; all: ${
      perStart.map((x) => x.toFixed(0)).join(", ")
    }`
  )
  yield* Scope.close(scope, Exit.void)
  yield* onDatabase(
    adminUrl,
    Effect.gen(function*() {
      yield* (yield* SqlClient).unsafe(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`)
    })
  )
})

await Effect.runPromise(program)
child.stdin!.end()
process.exit(0)
