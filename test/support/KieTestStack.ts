/**
 * The Kie client stack for tests, against a `FakeKie` on loopback:
 * `Kie` + `KieCallbacks` + `KieRateBudget` + `AppConfig`, on the test
 * database. Also the callback route on a real HTTP server, and helpers that
 * drive TestClock while the fake does real I/O.
 */
import { NodeHttpServer } from "@effect/platform-node"
import { Duration, Effect, Layer } from "effect"
import { HttpRouter, HttpServer } from "effect/http"
import { TestClock } from "effect/testing"
import { createServer } from "node:http"
import { Kie } from "../../src/kie/Kie.ts"
import { KieCallbackRoute, KieCallbacks } from "../../src/kie/KieCallback.ts"
import { KieRateBudget } from "../../src/kie/KieRateBudget.ts"
import type { FakeKie } from "../fakes/FakeKie.ts"
import { TestConfigLive } from "./TestConfig.ts"
import { TestDatabaseLive } from "./TestDatabase.ts"

/** A fresh migrated database (with `PgClient`/`SqlClient`) for a test file. */
export const KieTestDatabase = TestDatabaseLive.pipe(Layer.provide(TestConfigLive()))

/** Everything `Kie` needs, pointed at `fake`; `env` overrides variables. Needs the database. */
export const KieStack = (fake: FakeKie, env: Record<string, string> = {}) =>
  Kie.layer.pipe(
    Layer.provideMerge(Layer.mergeAll(KieCallbacks.layer, KieRateBudget.layer)),
    Layer.provideMerge(TestConfigLive({ KIE_BASE_URL: fake.url, ...env }))
  )

/** `POST /kie/callback` on 127.0.0.1 on a free port. Needs `AppConfig` and `KieCallbacks`. */
export const CallbackServer = HttpRouter.serve(KieCallbackRoute, { disableLogger: true }).pipe(
  Layer.provideMerge(NodeHttpServer.layer(() => createServer(), { port: 0, host: "127.0.0.1" }))
)

/** `http://127.0.0.1:<port>` of the running `CallbackServer`. */
export const serverUrl: Effect.Effect<string, never, HttpServer.HttpServer> = HttpServer.addressFormattedWith(
  (address) => Effect.succeed(address.replace(/\/$/, ""))
)

/** Moves TestClock, then waits for the real I/O that set off to finish. */
export const tick = (fake: FakeKie, duration: Duration.Input) =>
  TestClock.adjust(duration).pipe(Effect.andThen(Effect.promise(() => fake.idle())))

/**
 * Advances TestClock by `step` until `done` holds, letting the fake finish
 * the I/O of each step. Fails the test after `maxSteps`.
 */
export const advanceUntil = (
  fake: FakeKie,
  done: Effect.Effect<boolean>,
  step: Duration.Input,
  maxSteps = 200
) =>
  Effect.gen(function*() {
    yield* Effect.promise(() => fake.idle())
    for (let i = 0; i < maxSteps; i++) {
      if (yield* done) return i
      yield* tick(fake, step)
    }
    if (yield* done) return maxSteps
    return yield* Effect.die(
      new Error(`advanceUntil: not done after ${maxSteps} steps of ${Duration.format(Duration.fromInputUnsafe(step))}`)
    )
  })
