/**
 * PostgreSQL for the whole service: the connection pool (external via
 * DATABASE_URL, or the embedded server), migrations, and readiness.
 *
 * Startup never blocks the HTTP server: the pool is lazy, and connecting plus
 * migrating runs in the background with backoff, so `/health` answers (with
 * `db: "down"`) while the database is unreachable. Errors that retrying cannot
 * fix (bad credentials, missing database, a failing migration) and an outage
 * longer than DATABASE_STARTUP_TIMEOUT_MS end startup through `awaitStartup`.
 */
import { PgClient } from "@effect/sql-pg"
import { Context, Deferred, Duration, Effect, Layer, Option, Predicate, Redacted, Ref, Schema } from "effect"
import * as Migrator from "effect/sql/Migrator"
import { SqlClient } from "effect/sql/SqlClient"
import { AppConfig, lockKeyFromName } from "../platform/AppConfig.ts"
import { makeOutageLog } from "../platform/ProblemLog.ts"
import { backoff } from "../platform/Retry.ts"
import * as EmbeddedPostgres from "./EmbeddedPostgres.ts"
import { describeSqlError, isSqlError } from "./SqlErrors.ts"

/** Startup gave up: an error retrying cannot fix, or an outage longer than DATABASE_STARTUP_TIMEOUT_MS. */
export class DatabaseUnavailable extends Schema.TaggedError<DatabaseUnavailable>()("DatabaseUnavailable", {
  message: Schema.String
}) {}

/** For /health: "starting" at first, "down" while startup retries or when a ping fails, "ok" otherwise. */
export type DatabaseState = "starting" | "ok" | "down"

/** The database as the rest of the service waits for and reports it. */
export class Database extends Context.Service<Database, {
  readonly kind: "external" | "embedded"
  /** Completes once the database answered and migrations ran. */
  readonly ready: Effect.Effect<void>
  /** Completes like `ready`, or fails when startup gave up. For `main`. */
  readonly awaitStartup: Effect.Effect<void, DatabaseUnavailable>
  /** A quick round trip, bounded by a short timeout; never fails. */
  readonly ping: Effect.Effect<boolean>
  /** The last known state, without touching the database. */
  readonly state: Effect.Effect<DatabaseState>
}>()("zimage-bot/Database") {}

/** Backoff while the database is unreachable at startup. */
export const startupPolicy = backoff("200 millis", "5 seconds")

/** Migrations by `<number>_<name>`, run once each in number order. */
export type Migrations = Record<string, Effect.Effect<void, unknown, SqlClient>>

/** Serialises migrations of instances that start at the same moment. */
const MIGRATION_LOCK_KEY = lockKeyFromName("zimage-bot/migrations")

const runMigrator = Migrator.make({})

/** Errors that waiting cannot fix: anything but a failure to talk to the server. */
const isPermanent = (error: unknown): boolean => {
  if (!isSqlError(error)) return true
  const reason = error.reason
  if (reason._tag === "AuthenticationError" || reason._tag === "AuthorizationError") return true
  if (reason._tag === "SqlSyntaxError") return true
  const code = (reason.cause as { code?: unknown } | undefined)?.code
  return code === "3D000" // invalid_catalog_name: the database does not exist
}

const describeError = (error: unknown) =>
  isSqlError(error)
    ? describeSqlError(error)
    : Predicate.isTagged(error, "MigrationError")
    ? `migration failed: ${(error as Migrator.MigrationError).message}`
    : `migration failed: ${String(error)}`

/**
 * Runs every pending migration while holding a session advisory lock on one
 * reserved connection, so two instances starting together take turns instead
 * of racing on `CREATE TABLE IF NOT EXISTS` of the migrations table.
 */
export const migrate = Effect.fn("Database.migrate")(function*(migrations: Migrations) {
  const sql = yield* SqlClient
  yield* Effect.scoped(Effect.gen(function*() {
    const conn = yield* sql.reserve
    yield* Effect.acquireRelease(
      conn.executeRaw(`SELECT pg_advisory_lock(${MIGRATION_LOCK_KEY}::bigint)`, []),
      () => Effect.ignore(conn.executeRaw(`SELECT pg_advisory_unlock(${MIGRATION_LOCK_KEY}::bigint)`, []))
    )
    const applied = yield* runMigrator({ loader: Migrator.fromRecord(migrations) })
    for (const [id, name] of applied) {
      yield* Effect.logInfo(`[DB] migration ${id}_${name} applied`)
    }
  }))
})

/** The pool: on DATABASE_URL, or on a freshly started embedded server. */
const PoolLive = Layer.unwrap(Effect.gen(function*() {
  const config = yield* AppConfig
  // Added before the pool is built, so it runs once the pool (and an embedded
  // server) has closed: the last step of a shutdown.
  yield* Effect.addFinalizer(() =>
    Effect.logInfo(
      Option.isSome(config.databaseUrl)
        ? "[DB] connection pool closed"
        : "[DB] connection pool closed, embedded PostgreSQL stopped"
    )
  )
  const common = {
    maxConnections: config.databasePoolSize,
    connectTimeout: Duration.seconds(5),
    applicationName: `zimage-bot ${config.instanceId}`.slice(0, 63),
    idleTimeout: Duration.seconds(60)
  }
  if (Option.isSome(config.databaseUrl)) {
    return PgClient.layer({ ...common, url: config.databaseUrl.value })
  }
  return Layer.unwrap(Effect.gen(function*() {
    const runFork = Effect.runForkWith(yield* Effect.context())
    const server = yield* EmbeddedPostgres.acquire({
      dataDir: config.embeddedPgDir,
      onLog: (message) => void runFork(Effect.logInfo(`[DB] ${message}`))
    })
    return PgClient.layer({ ...common, url: Redacted.make(server.urlFor("postgres")) })
  }))
}))

const make = (migrations: Migrations) =>
  Effect.gen(function*() {
    const config = yield* AppConfig
    const sql = yield* SqlClient
    const kind = Option.isSome(config.databaseUrl) ? "external" as const : "embedded" as const
    const ready = yield* Deferred.make<void>()
    const startup = yield* Deferred.make<void, DatabaseUnavailable>()
    const state = yield* Ref.make<DatabaseState>("starting")

    const ping = sql`SELECT 1`.pipe(
      Effect.timeout("2 seconds"),
      Effect.as(true),
      Effect.catchCause(() => Effect.succeed(false)),
      Effect.tap((up) => Ref.update(state, (s) => (s === "starting" ? s : up ? "ok" : "down")))
    )

    // Logged once for the whole startup, not once per attempt.
    const outage = makeOutageLog()
    const attempt = migrate(migrations).pipe(
      Effect.tapError((error) =>
        isPermanent(error) ? Effect.void : Effect.andThen(
          Ref.set(state, "down"),
          outage.failing(`[DB] database unreachable, retrying: ${describeError(error)}`)
        )
      )
    )

    const budget = config.databaseStartupTimeout
    const started = yield* Effect.clockWith((clock) => Effect.succeed(clock.currentTimeMillisUnsafe()))
    const outOfTime = Effect.clockWith((clock) =>
      Effect.succeed(clock.currentTimeMillisUnsafe() - started >= Duration.toMillis(budget))
    )

    yield* attempt.pipe(
      Effect.retry({
        schedule: startupPolicy,
        while: (error) => Effect.map(outOfTime, (late) => !isPermanent(error) && !late)
      }),
      Effect.matchEffect({
        onSuccess: () =>
          Effect.gen(function*() {
            yield* Ref.set(state, "ok")
            yield* Effect.logInfo(`[DB] ready (${kind} PostgreSQL)`)
            yield* Deferred.succeed(ready, undefined)
            yield* Deferred.succeed(startup, undefined)
          }),
        onFailure: (error) =>
          Deferred.fail(
            startup,
            new DatabaseUnavailable({
              message: isPermanent(error)
                ? `database error: ${describeError(error)}`
                : `database unreachable for ${Duration.format(budget)}: ${describeError(error)}`
            })
          )
      }),
      Effect.forkScoped
    )

    return Database.of({
      kind,
      ready: Deferred.await(ready),
      awaitStartup: Deferred.await(startup),
      ping,
      state: Ref.get(state)
    })
  })

/** `Database` on the pool it is given (tests bring their own pool). */
export const layerWithPool = (migrations: Migrations) => Layer.effect(Database, make(migrations))

/** `Database` plus the `PgClient`/`SqlClient` it runs on, from `AppConfig`. */
export const layer = (migrations: Migrations) => layerWithPool(migrations).pipe(Layer.provideMerge(PoolLive))
