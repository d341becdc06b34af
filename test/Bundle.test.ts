/**
 * The production build: `npm run build` bundles the service with rolldown and
 * `npm run start:dist` (Render's start command) runs it. The bundle must
 * behave like the sources: serve /health, become ACTIVE, exit 0 on SIGTERM,
 * without warnings on stderr.
 */
import { assert, describe, it } from "@effect/vitest"
import { Effect } from "effect"
import { bundle } from "../scripts/build.ts"
import { getJson, startService } from "./support/ServiceProcess.ts"
import { processEnv } from "./support/TestConfig.ts"
import { freshDatabaseUrl } from "./support/TestDatabase.ts"

describe("production bundle", () => {
  it.live("npm run build, then npm run start:dist serves the bot", () =>
    Effect.gen(function*() {
      yield* Effect.promise(() => bundle("dist"))
      const service = startService(
        {
          ...processEnv,
          DATABASE_URL: yield* freshDatabaseUrl
        },
        { via: "npm-dist" }
      )
      yield* Effect.addFinalizer(() => Effect.sync(() => service.killAll()))
      const port = yield* Effect.promise(() => service.port())
      yield* Effect.promise(() => service.waitForLine((l) => l.includes("[GEN] engine started")))
      const health = yield* Effect.promise(() => getJson(port, "/health"))
      assert.strictEqual(health.status, 200)
      assert.strictEqual(health.body.active, true)
      assert.strictEqual(health.body.db, "ok")
      service.kill("SIGTERM")
      assert.strictEqual(yield* Effect.promise(() => service.exited), 0)
      const notJson = service.lines().filter((line) => {
        if (line.trim() === "") return false
        try {
          JSON.parse(line)
          return false
        } catch {
          return true
        }
      })
      assert.deepStrictEqual(notJson, [], "every output line is a JSON log line (no warnings)")
    }))
})
