import { assert, describe, it } from "@effect/vitest"
import { PgClient } from "@effect/sql-pg"
import { Context, Effect, Exit, Layer, Redacted, Scope } from "effect"
import { SqlClient } from "effect/sql/SqlClient"
import { spawn } from "node:child_process"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { fileURLToPath } from "node:url"
import * as Database from "../src/database/Database.ts"
import * as EmbeddedPostgres from "../src/database/EmbeddedPostgres.ts"
import { TestConfigLive } from "./support/TestConfig.ts"

const here = path.dirname(fileURLToPath(import.meta.url))

/** A data directory the `postgres` OS user can reach even when we run as root. */
const tempDataDir = Effect.acquireRelease(
  Effect.sync(() => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), "zimage-bot-embedded-"))
    fs.chmodSync(dir, 0o755)
    return dir
  }),
  (dir) => Effect.sync(() => fs.rmSync(dir, { recursive: true, force: true }))
)

const testMigrations: Database.Migrations = {
  "0001_notes": Effect.gen(function*() {
    const sql = yield* SqlClient
    yield* sql`CREATE TABLE notes (id serial PRIMARY KEY, body text NOT NULL)`
  })
}

/** Runs `f` against a started server: migrations applied, `SqlClient` on it. */
const withServer = <A, E>(dataDir: string, f: Effect.Effect<A, E, SqlClient>) =>
  Effect.gen(function*() {
    const server = yield* EmbeddedPostgres.acquire({ dataDir })
    return yield* Effect.gen(function*() {
      yield* Database.migrate(testMigrations)
      return yield* f
    }).pipe(Effect.provide(PgClient.layer({ url: Redacted.make(server.urlFor("postgres")), maxConnections: 2 })))
  }).pipe(Effect.scoped)

describe("embedded PostgreSQL", () => {
  it.live("start → migrate → query → stop → restart keeps the data", () =>
    Effect.gen(function*() {
      const dir = path.join(yield* tempDataDir, "pg")
      yield* withServer(
        dir,
        Effect.gen(function*() {
          const sql = yield* SqlClient
          yield* sql`INSERT INTO notes (body) VALUES ('first run')`
        })
      )
      assert.isUndefined(EmbeddedPostgres.runningPostmaster(dir), "the server is stopped when its scope closes")

      const rows = yield* withServer(
        dir,
        Effect.gen(function*() {
          const sql = yield* SqlClient
          const migrations = yield* sql<{ name: string }>`SELECT name FROM effect_sql_migrations`
          const notes = yield* sql<{ body: string }>`SELECT body FROM notes`
          return { migrations, notes }
        })
      )
      assert.deepStrictEqual(rows.migrations.map((r) => r.name), ["notes"])
      assert.deepStrictEqual(rows.notes.map((r) => r.body), ["first run"])
    }))

  it.live("recovers a postmaster left running by a SIGKILLed process, losing no data", () =>
    Effect.gen(function*() {
      const dir = path.join(yield* tempDataDir, "pg")
      const child = spawn(process.execPath, [path.join(here, "support/embeddedChild.ts"), dir], {
        stdio: ["ignore", "pipe", "pipe"]
      })
      const orphan = yield* Effect.promise(() =>
        new Promise<number>((resolve, reject) => {
          let out = ""
          child.stdout.on("data", (chunk: Buffer) => {
            out += chunk.toString()
            const match = /ready (\d+)/.exec(out)
            if (match) resolve(Number(match[1]))
          })
          child.stderr.on("data", (chunk: Buffer) => (out += chunk.toString()))
          child.once("exit", (code) => reject(new Error(`child exited ${code}: ${out}`)))
        })
      )
      yield* Effect.promise(() =>
        new Promise<void>((resolve) => {
          child.once("exit", () => resolve())
          child.kill("SIGKILL")
        })
      )
      assert.strictEqual(EmbeddedPostgres.runningPostmaster(dir), orphan, "the postmaster outlived its owner")

      const kept = yield* withServer(
        dir,
        Effect.gen(function*() {
          const sql = yield* SqlClient
          return yield* sql<{ v: string }>`SELECT v FROM kept`
        })
      )
      assert.deepStrictEqual(kept.map((r) => r.v), ["written before the kill"])
      assert.notStrictEqual(EmbeddedPostgres.runningPostmaster(dir), orphan)
    }))

  it.live("refuses a data directory that is not a PostgreSQL cluster", () =>
    Effect.gen(function*() {
      const dir = path.join(yield* tempDataDir, "pg")
      fs.mkdirSync(dir)
      fs.writeFileSync(path.join(dir, "something.txt"), "precious")
      const error = yield* EmbeddedPostgres.acquire({ dataDir: dir }).pipe(Effect.scoped, Effect.flip)
      assert.include(error.message, "is not a PostgreSQL data directory")
      assert.strictEqual(fs.readFileSync(path.join(dir, "something.txt"), "utf8"), "precious")
    }))

  it.live("the Database layer starts the embedded server when DATABASE_URL is unset", () =>
    Effect.gen(function*() {
      const dir = path.join(yield* tempDataDir, "pg")
      const scope = yield* Scope.make()
      const context = yield* Layer.buildWithScope(
        Database.layer(testMigrations).pipe(Layer.provide(TestConfigLive({ EMBEDDED_PG_DIR: dir }))),
        scope
      )
      const database = Context.get(context, Database.Database)
      yield* database.awaitStartup
      assert.strictEqual(database.kind, "embedded")
      assert.isTrue(yield* database.ping)
      assert.isNumber(EmbeddedPostgres.runningPostmaster(dir))
      yield* Scope.close(scope, Exit.void)
      assert.isUndefined(EmbeddedPostgres.runningPostmaster(dir))
    }))
})
