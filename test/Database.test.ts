import { assert, describe, it } from "@effect/vitest"
import { PgClient } from "@effect/sql-pg"
import { Context, Effect, Layer, Redacted } from "effect"
import { SqlClient } from "effect/sql/SqlClient"
import * as Database from "../src/database/Database.ts"
import { TestConfigLive } from "./support/TestConfig.ts"
import { freshDatabaseUrl } from "./support/TestDatabase.ts"

const slowMigrations: Database.Migrations = {
  "0001_first": Effect.gen(function*() {
    const sql = yield* SqlClient
    yield* sql`CREATE TABLE first (id int PRIMARY KEY)`
    yield* sql`SELECT pg_sleep(0.2)`
  }),
  "0002_second": Effect.gen(function*() {
    const sql = yield* SqlClient
    yield* sql`CREATE TABLE second (id int PRIMARY KEY)`
  })
}

const pool = (url: string) => PgClient.layer({ url: Redacted.make(url), maxConnections: 3 })

const startDatabase = (url: string, migrations: Database.Migrations) =>
  Effect.gen(function*() {
    const context = yield* Layer.build(
      Database.layerWithPool(migrations).pipe(
        Layer.provide(pool(url)),
        Layer.provide(TestConfigLive({ DATABASE_STARTUP_TIMEOUT_MS: "0" }))
      )
    )
    const database = Context.get(context, Database.Database)
    return yield* database.awaitStartup.pipe(Effect.as(database))
  })

describe("Database", () => {
  it.live("two instances starting at once each migrate safely, every migration applied once", () =>
    Effect.gen(function*() {
      const url = yield* freshDatabaseUrl
      // Eight at once, none allowed to retry: each must succeed on its first
      // attempt, and every migration is applied exactly once.
      const instances = yield* Effect.all(
        Array.from({ length: 8 }, () => startDatabase(url, slowMigrations)),
        { concurrency: "unbounded" }
      )
      for (const database of instances) assert.isTrue(yield* database.ping)
      const applied = yield* Effect.gen(function*() {
        const sql = yield* SqlClient
        return yield* sql<{ migration_id: number }>`SELECT migration_id FROM effect_sql_migrations ORDER BY 1`
      }).pipe(Effect.provide(pool(url)))
      assert.deepStrictEqual(applied.map((r) => r.migration_id), [1, 2])
    }))

  it.live("a failing migration ends startup at once with a clear message", () =>
    Effect.gen(function*() {
      const url = yield* freshDatabaseUrl
      const error = yield* startDatabase(url, {
        "0001_broken": Effect.gen(function*() {
          const sql = yield* SqlClient
          yield* sql`CREATE TABLE broken (id int PRIMARY KEY, id int)`
        })
      }).pipe(Effect.flip)
      assert.strictEqual(error._tag, "DatabaseUnavailable")
      assert.include(error.message, "database error")
    }))
})
