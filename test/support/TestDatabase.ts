/**
 * A fresh database per test file on the shared test server, dropped when the
 * scope closes, so test files can run in parallel without seeing each other.
 */
import { PgClient, PgConnection } from "@effect/sql-pg"
import { Effect, Exit, Layer, Redacted, Scope } from "effect"
import { SqlClient } from "effect/sql/SqlClient"
import { randomBytes } from "node:crypto"
import { inject } from "vitest"
import * as Database from "../../src/database/Database.ts"
import { migrations } from "../../src/Migrations.ts"

export const adminDatabaseUrl = (): string => inject("adminDatabaseUrl")

/** `url` with its database name replaced. */
export const withDatabase = (url: string, database: string): string => {
  const parsed = new URL(url)
  parsed.pathname = `/${encodeURIComponent(database)}`
  return parsed.href
}

const admin = <A, E>(f: (sql: SqlClient) => Effect.Effect<A, E>) =>
  Effect.gen(function*() {
    const sql = yield* SqlClient
    return yield* f(sql)
  }).pipe(
    Effect.provide(PgClient.layer({ url: Redacted.make(adminDatabaseUrl()), maxConnections: 1 })),
    Effect.scoped
  )

/** Creates an empty database and returns its URL; drops it when the scope closes. */
export const freshDatabaseUrl = Effect.acquireRelease(
  Effect.gen(function*() {
    const name = `zb_${randomBytes(6).toString("hex")}`
    yield* admin((sql) => sql.unsafe(`CREATE DATABASE ${name}`))
    return { name, url: withDatabase(adminDatabaseUrl(), name) }
  }),
  ({ name }) => Effect.ignore(admin((sql) => sql.unsafe(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`)))
).pipe(Effect.map(({ url }) => url), Effect.orDie)

/** `PgClient`/`SqlClient` on a fresh database. */
export const TestPgLive = Layer.unwrap(
  Effect.map(freshDatabaseUrl, (url) =>
    PgClient.layer({
      url: Redacted.make(url),
      maxConnections: 10,
      // Named like the service's pool (`database/Database.ts`) for TestConfig's INSTANCE_ID "test", so terms of
      // that instance count as alive for the reconciler (`inbox/sql/stuck.ts`).
      applicationName: "zimage-bot test"
    }))
).pipe(Layer.orDie)

/** A fresh database with every migration applied, plus `Database` on it. Needs `AppConfig`. */
export const TestDatabaseLive = Layer.effectDiscard(Effect.gen(function*() {
  const database = yield* Database.Database
  yield* database.awaitStartup
})).pipe(Layer.provideMerge(Database.layerWithPool(migrations)), Layer.provideMerge(TestPgLive))

/**
 * Keeps a connection named like `instance`'s pool open until the returned
 * effect closes it (or the test ends): that instance's process counts as alive.
 */
export const connectedAs = (instance: string) =>
  Effect.gen(function*() {
    const pg = yield* PgClient.PgClient
    const scope = yield* Scope.make()
    yield* Effect.addFinalizer(() => Scope.close(scope, Exit.void))
    const connection = yield* PgConnection.make({
      url: pg.config.url,
      applicationName: `zimage-bot ${instance}`
    }).pipe(Scope.provide(scope))
    return { pid: connection.processId, close: Scope.close(scope, Exit.void) }
  })
