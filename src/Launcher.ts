/**
 * Runs the service: loads the configuration, installs logging, builds the
 * application layer and keeps it up until SIGTERM/SIGINT.
 *
 * A startup failure (bad configuration, a port in use, a database that does
 * not come up) ends the process with exactly one log line and exit code 1,
 * never a stack trace. A signal ends it with exit code 0 once every layer has
 * been released.
 *
 * Shutdown (SIGTERM from Render, or SIGINT): the signal interrupts the main
 * fiber, which releases the application layer in dependency order (see
 * `main.ts`): the HTTP server and the leader lock first, concurrently (the
 * server finishes requests in flight, the lock's leader-only services drain,
 * then the lock is released), then the services they use, then the database
 * pool. It is logged as `[SHUTDOWN] <signal> received` and
 * `[SHUTDOWN] done in N ms; exit code 0`. A hard deadline
 * (SHUTDOWN_DEADLINE_MS from the signal) bounds it even if something hangs:
 * then one `[SHUTDOWN]` error line and exit code 1, before Render's SIGKILL.
 * A second SIGINT (Ctrl+C twice in a terminal) exits at once with code 130.
 */
import * as NodeRuntime from "@effect/platform-node/NodeRuntime"
import { Cause, Duration, Effect, Exit, type Layer, Logger, References } from "effect"
import { ServeError } from "effect/http/HttpServerError"
import { SqlError } from "effect/sql/SqlError"
import { AppConfig, type AppConfigShape, ConfigInvalid, secretsOf } from "./platform/AppConfig.ts"
import { Database, DatabaseUnavailable } from "./database/Database.ts"
import { EmbeddedPostgresError } from "./database/EmbeddedPostgres.ts"
import { LoggingLive, makeLogger } from "./platform/Logging.ts"
import { checkConfiguredModels } from "./kie/ModelCatalog.ts"

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

const levelOf = { trace: "Trace", debug: "Debug", info: "Info", warn: "Warn", error: "Error" } as const

/**
 * Writes one line outside the application's runtime (from a signal handler or
 * the teardown), with the same format, redaction and level as its logger.
 */
const logOutside = (config: AppConfigShape | undefined, level: "Info" | "Error", message: string): void => {
  const log = level === "Error" ? Effect.logError(message) : Effect.logInfo(message)
  Effect.runSync(log.pipe(
    Effect.provide(Logger.layer([fallbackLogger(config)])),
    Effect.provideService(References.MinimumLogLevel, levelOf[config?.logLevel ?? "info"])
  ))
}

/** Used when a signal arrives before the configuration was read. */
const defaultShutdownDeadline = Duration.seconds(30)

const exitCode = <E, A>(exit: Exit.Exit<E, A>) => Exit.isSuccess(exit) || Cause.hasInterruptsOnly(exit.cause) ? 0 : 1

/**
 * Launches `app` as the process. `app` must include the `Database` layer: the
 * process stays up while the database is still coming up and exits when
 * `Database.awaitStartup` gives up.
 */
export const launch = <E>(app: Layer.Layer<Database, E, AppConfig>): void => {
  let loaded: AppConfigShape | undefined
  let shutdown: { readonly signal: NodeJS.Signals; readonly at: number } | undefined

  // Registered before runMain's own handlers (which interrupt the main
  // fiber), so the first line of a shutdown is this one.
  const onSignal = (signal: NodeJS.Signals) => {
    if (shutdown !== undefined) {
      if (signal !== "SIGINT") return
      logOutside(loaded, "Error", "[SHUTDOWN] second SIGINT: exiting now with code 130")
      return process.exit(130)
    }
    shutdown = { signal, at: Date.now() }
    const deadline = loaded?.shutdownDeadline ?? defaultShutdownDeadline
    logOutside(
      loaded,
      "Info",
      `[SHUTDOWN] ${signal} received: finishing in-flight work (up to ${
        loaded === undefined ? "?" : Duration.format(loaded.shutdownTimeout)
      }), then releasing the leader lock and closing the database; hard deadline ${Duration.format(deadline)}`
    )
    setTimeout(() => {
      logOutside(
        loaded,
        "Error",
        `[SHUTDOWN] graceful shutdown still running ${Duration.format(deadline)} after ${signal}; exiting with code 1`
      )
      process.exit(1)
    }, Duration.toMillis(deadline)).unref()
  }
  process.on("SIGTERM", onSignal)
  process.on("SIGINT", onSignal)
  const program = Effect.gen(function*() {
    const config = yield* AppConfig.load
    loaded = config
    yield* checkConfiguredModels(config)
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
    teardown: (exit, onExit) => {
      const code = exitCode(exit)
      if (shutdown !== undefined) {
        const elapsed = Date.now() - shutdown.at
        logOutside(loaded, code === 0 ? "Info" : "Error", `[SHUTDOWN] done in ${elapsed} ms; exit code ${code}`)
      }
      onExit(code)
    }
  })
}
