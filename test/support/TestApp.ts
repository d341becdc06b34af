/**
 * The whole service (`src/App.ts`) built in-process for end-to-end tests: real
 * HTTP on 127.0.0.1, a real test database, and the fake Telegram and Kie
 * servers given in `env`. It waits until the database is migrated and this
 * instance is ACTIVE.
 */
import { Context, Effect, Exit, Layer, Scope, Stream, SubscriptionRef } from "effect"
import { HttpServer } from "effect/http"
import { SqlClient } from "effect/sql/SqlClient"
import { isInetAddress } from "effect/net/NetAddress"
import { createServer } from "node:net"
import { AppLive } from "../../src/App.ts"
import { Database } from "../../src/database/Database.ts"
import { LeaderState } from "../../src/leadership/LeaderLock.ts"
import { TestConfigLive } from "./TestConfig.ts"

export interface TestApp {
  readonly port: number
  readonly context: Context.Context<never>
  /** Runs an effect with the app's services (Generations, ChatSessions, …). */
  readonly run: <A, E>(effect: Effect.Effect<A, E, any>) => Effect.Effect<A, E>
}

/** A TCP port nothing listens on right now (for PUBLIC_URL, which must be known before start). */
export const freePort = Effect.promise(() =>
  new Promise<number>((resolve, reject) => {
    const server = createServer()
    server.once("error", reject)
    server.listen(0, "127.0.0.1", () => {
      const port = (server.address() as { port: number }).port
      server.close(() => resolve(port))
    })
  })
)

/** Builds the app in the current scope with `env` on top of the test defaults. */
export const startApp = (env: Record<string, string>): Effect.Effect<TestApp, never, Scope.Scope> =>
  Effect.gen(function*() {
    const context = yield* Layer.build(AppLive.pipe(Layer.provide(TestConfigLive(env)))).pipe(Effect.orDie)
    const run = <A, E>(effect: Effect.Effect<A, E, any>) => Effect.provide(effect, context) as Effect.Effect<A, E>
    yield* run(Effect.gen(function*() {
      yield* (yield* Database).awaitStartup
      const leader = yield* LeaderState
      yield* SubscriptionRef.changes(leader.active).pipe(Stream.filter((active) => active), Stream.runHead)
    })).pipe(Effect.orDie)
    const address = Context.get(context, HttpServer.HttpServer).address
    if (!isInetAddress(address)) return yield* Effect.die(new Error("the app is not on TCP"))
    return { port: address.port, context: context as Context.Context<never>, run }
  })

/**
 * Waits (bounded, real time) until the inbox has stored update `updateId`
 * and finished every update: a way to know the flow is done without sleeping.
 * Returns how many updates ended dead.
 */
export const awaitInboxIdle = (app: TestApp, updateId: number, timeoutMs = 20_000) =>
  app.run(Effect.gen(function*() {
    const sql = yield* SqlClient
    const deadline = Date.now() + timeoutMs
    while (Date.now() < deadline) {
      const [row] = yield* sql<{ unfinished: bigint; dead: bigint; seen: bigint }>`
        SELECT count(*) FILTER (WHERE status IN ('pending', 'processing')) AS unfinished,
               count(*) FILTER (WHERE status = 'dead') AS dead,
               count(*) FILTER (WHERE update_id = ${updateId}) AS seen
        FROM telegram_updates`
      if (row!.seen > 0n && row!.unfinished === 0n) return Number(row!.dead)
      yield* Effect.promise(() => new Promise((resolve) => setTimeout(resolve, 20)))
    }
    return yield* Effect.die(new Error(`the inbox did not finish update ${updateId} within ${timeoutMs} ms`))
  }))

/** Builds the app in its own scope, so a test can stop it (a restart) and start another. */
export const startAppScoped = (env: Record<string, string>) =>
  Effect.gen(function*() {
    const scope = yield* Scope.make()
    const app = yield* startApp(env).pipe(Scope.provide(scope))
    return { app, stop: Scope.close(scope, Exit.void) }
  })
