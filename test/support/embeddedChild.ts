/**
 * A process that starts the embedded PostgreSQL on the directory given as its
 * argument, writes one row, prints "ready <postmaster pid>" and waits to be
 * killed. Used to leave a postmaster behind the way a SIGKILLed bot does.
 */
import { PgClient } from "@effect/sql-pg"
import { Effect, Redacted } from "effect"
import { SqlClient } from "effect/sql/SqlClient"
import * as EmbeddedPostgres from "../../src/database/EmbeddedPostgres.ts"

const dataDir = process.argv[2]!

Effect.gen(function*() {
  const server = yield* EmbeddedPostgres.acquire({ dataDir })
  yield* Effect.gen(function*() {
    const sql = yield* SqlClient
    yield* sql`CREATE TABLE IF NOT EXISTS kept (v text)`
    yield* sql`INSERT INTO kept VALUES ('written before the kill')`
  }).pipe(Effect.provide(PgClient.layer({ url: Redacted.make(server.urlFor("postgres")), maxConnections: 1 })))
  process.stdout.write(`ready ${server.pid}\n`)
  return yield* Effect.never
}).pipe(Effect.scoped, Effect.runPromise).catch((error) => {
  process.stderr.write(`child failed: ${error}\n`)
  process.exit(2)
})
