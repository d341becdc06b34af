/**
 * Runs the service: loads the configuration, installs logging, builds the
 * application layer and keeps it up until SIGTERM/SIGINT.
 *
 * A startup failure (bad configuration, a port in use, a database that does
 * not come up) ends the process with exactly one log line and exit code 1,
 * never a stack trace. A signal ends it with exit code 0 once every layer has
 * been released.
 */
import { NodeRuntime } from "@effect/platform-node"
import { Cause, Effect, Exit, Layer, Logger } from "effect"
import { ServeError } from "effect/http/HttpServerError"
import { SqlError } from "effect/sql/SqlError"
import { AppConfig, type AppConfigShape, ConfigInvalid, secretsOf } from "./AppConfig.ts"
import { Database, DatabaseUnavailable } from "./Database.ts"
import { EmbeddedPostgresError } from "./EmbeddedPostgres.ts"
import { LoggingLive, makeLogger } from "./Logging.ts"

/** One human sentence for a startup failure; never the raw error object. */
export const describeFatal = (error: unknown): string => {
  if (error instanceof ConfigInvalid) return `configuration error: ${error.message}`
  if (error instanceof ServeError) {
    const cause = error.cause as NodeJS.ErrnoException | undefined
    return cause?.code === "EADDRINUSE"
      ? "cannot listen: the port is already in use (set PORT to a free port)"
      : `cannot start the HTTP server: ${cause?.message ?? "unknown error"}`
  }
  if (error instanceof DatabaseUnavailable || error instanceof EmbeddedPostgresError) return error.message
  if (error instanceof SqlError) return `database error: ${error.message}`
  if (error instanceof Error) return `startup failed: ${error.message}`
  return `startup failed: ${String(error)}`
}

const fallbackLogger = (config: AppConfigShape | undefined) =>
  makeLogger({
    format: config?.logFormat ??
      (process.env.LOG_FORMAT?.toLowerCase() === "pretty" || (!process.env.LOG_FORMAT && process.stdout.isTTY)
        ? "pretty"
        : "json"),
    secrets: config === undefined ? [] : secretsOf(config)
  })

const exitCode = <E, A>(exit: Exit.Exit<E, A>) =>
  Exit.isSuccess(exit) || Cause.hasInterruptsOnly(exit.cause) ? 0 : 1

/**
 * Launches `app` as the process. `app` must include the `Database` layer: the
 * process stays up while the database is still coming up and exits when
 * `Database.awaitStartup` gives up.
 */
export const launch = <E>(app: Layer.Layer<Database, E, AppConfig>): void => {
  let loaded: AppConfigShape | undefined
  const program = Effect.gen(function*() {
    const config = yield* AppConfig.load
    loaded = config
    yield* Effect.gen(function*() {
      const database = yield* Database
      yield* database.awaitStartup
      return yield* Effect.never
    }).pipe(
      Effect.provide(app),
      Effect.provide(LoggingLive),
      Effect.provide(AppConfig.layerWith(config))
    )
  }).pipe(
    Effect.tapCause((cause) =>
      Cause.hasInterruptsOnly(cause)
        ? Effect.void
        : Effect.logError(describeFatal(Cause.squash(cause))).pipe(
          Effect.provide(Logger.layer([fallbackLogger(loaded)]))
        )
    )
  )
  NodeRuntime.runMain(program, {
    disableErrorReporting: true,
    teardown: (exit, onExit) => onExit(exitCode(exit))
  })
}
