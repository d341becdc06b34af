/**
 * PostgreSQL for the bench: the server (`BENCH_DATABASE_URL` or
 * `DATABASE_URL` when set, else an embedded server of our own, durable: fsync
 * and synchronous_commit as PostgreSQL ships them), fresh databases on it, and
 * clients with the service's own driver (`@effect/sql-pg`).
 */
import { PgClient } from "@effect/sql-pg"
import { Duration, Effect, Exit, Layer, ManagedRuntime, Redacted, Scope } from "effect"
import { SqlClient } from "effect/sql/SqlClient"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import * as EmbeddedPostgres from "../src/database/EmbeddedPostgres.ts"

export interface PgServer {
  readonly kind: "embedded" | "external"
  /** A URL for database `name` on this server. */
  readonly urlFor: (name: string) => string
  readonly close: () => Promise<void>
}

export interface ServerOptions {
  /** Use `BENCH_DATABASE_URL` / `DATABASE_URL` when set (default true). */
  readonly fromEnv?: boolean
  /** An embedded server with fsync off: only where durability is not what is measured. */
  readonly unsafeFast?: boolean
}

/** The server named by the environment, or an embedded one in a temporary directory. */
export const acquireServer = async (options: ServerOptions = {}): Promise<PgServer> => {
  const given = options.fromEnv === false ? undefined : process.env.BENCH_DATABASE_URL ?? process.env.DATABASE_URL
  if (given !== undefined && given !== "") {
    return {
      kind: "external",
      urlFor: (name) => {
        const url = new URL(given)
        url.pathname = `/${name}`
        return url.toString()
      },
      close: async () => {}
    }
  }
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "zimage-bench-"))
  fs.chmodSync(dir, 0o755)
  const scope = Effect.runSync(Scope.make())
  try {
    const server = await Effect.runPromise(
      EmbeddedPostgres.acquire({ dataDir: path.join(dir, "pg"), unsafeFast: options.unsafeFast === true }).pipe(
        Scope.provide(scope)
      )
    )
    return {
      kind: "embedded",
      urlFor: server.urlFor,
      close: async () => {
        await Effect.runPromise(Scope.close(scope, Exit.void))
        fs.rmSync(dir, { recursive: true, force: true })
      }
    }
  } catch (error) {
    await Effect.runPromise(Scope.close(scope, Exit.void))
    fs.rmSync(dir, { recursive: true, force: true })
    throw error
  }
}

export interface Db {
  readonly query: <A extends object = Record<string, unknown>>(
    statement: string,
    params?: ReadonlyArray<unknown>
  ) => Promise<ReadonlyArray<A>>
  /** Runs one of the service's own statements (e.g. `src/inbox/sql/store.ts`) on this pool. */
  readonly run: <A, E>(statement: (sql: SqlClient) => Effect.Effect<A, E>) => Promise<A>
  /**
   * Takes the session advisory lock `key` on a connection of its own and keeps
   * it until `release` (which unlocks before the connection goes back).
   */
  readonly holdLock: (key: bigint) => Promise<{ readonly release: () => Promise<void> }>
  readonly close: () => Promise<void>
}

/**
 * A pool of `maxConnections` on `url`, configured like the service's pool
 * (src/database/Database.ts): the same driver, no multiplexing, prepared statements.
 */
export const connect = async (url: string, maxConnections: number): Promise<Db> => {
  const runtime = ManagedRuntime.make(Layer.orDie(PgClient.layer({
    url: Redacted.make(url),
    maxConnections,
    connectTimeout: Duration.seconds(5),
    idleTimeout: Duration.seconds(60),
    applicationName: "zimage-bench"
  })))
  const sql = await runtime.runPromise(Effect.service(SqlClient))
  return {
    query: <A extends object>(statement: string, params: ReadonlyArray<unknown> = []) =>
      runtime.runPromise(sql.unsafe<A>(statement, params as Array<unknown>)) as Promise<ReadonlyArray<A>>,
    run: (statement) => runtime.runPromise(statement(sql)),
    holdLock: async (key) => {
      const scope = Effect.runSync(Scope.make())
      await runtime.runPromise(
        Effect.gen(function*() {
          const conn = yield* sql.reserve
          yield* Effect.acquireRelease(
            conn.executeRaw(`SELECT pg_advisory_lock(${key.toString()}::bigint)`, []),
            () => Effect.ignore(conn.executeRaw(`SELECT pg_advisory_unlock(${key.toString()}::bigint)`, []))
          )
        }).pipe(Scope.provide(scope))
      )
      return { release: () => Effect.runPromise(Scope.close(scope, Exit.void)) }
    },
    close: () => runtime.dispose()
  }
}

/** Runs `fn` with a one-connection client on `url`. */
export const withDb = async <A>(url: string, fn: (db: Db) => Promise<A>): Promise<A> => {
  const db = await connect(url, 1)
  try {
    return await fn(db)
  } finally {
    await db.close()
  }
}

/** Databases created by this run, dropped by `dropCreated`. */
const created: Array<string> = []

export const createDatabase = async (server: PgServer, name: string): Promise<string> => {
  await withDb(server.urlFor("postgres"), (db) => db.query(`CREATE DATABASE ${name}`))
  created.push(name)
  return server.urlFor(name)
}

export const dropCreated = async (server: PgServer): Promise<void> => {
  await withDb(server.urlFor("postgres"), async (db) => {
    for (const name of created.splice(0)) {
      await db.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`).catch(() => undefined)
    }
  })
}

export interface ServerFacts {
  readonly version: string
  readonly fsync: string
  readonly synchronousCommit: string
  readonly sharedBuffers: string
}

export const serverFacts = (server: PgServer): Promise<ServerFacts> =>
  withDb(server.urlFor("postgres"), async (db) => {
    const setting = async (name: string) =>
      (await db.query<{ setting: string }>(`SELECT current_setting('${name}') AS setting`))[0]!.setting
    return {
      version: await setting("server_version"),
      fsync: await setting("fsync"),
      synchronousCommit: await setting("synchronous_commit"),
      sharedBuffers: await setting("shared_buffers")
    }
  })
