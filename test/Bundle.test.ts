/**
 * The production build: `npm run build` bundles the service with rolldown and
 * `npm run start:dist` (Render's start command) runs it. The bundle must
 * behave like the sources: serve /health, become ACTIVE, exit 0 on SIGTERM,
 * without warnings on stderr. And it must not load undici (the npm package or
 * Node's bundled copy behind the global `fetch`, `Headers`, `FormData`):
 * the bot does not need it and it costs 14–15 MiB of RSS (docs/benchmarks.md,
 * "Idle RSS below 100 MiB"). A `--require`d probe lists the modules loaded.
 */
import { assert, describe, it } from "@effect/vitest"
import { Effect } from "effect"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { bundle } from "../scripts/build.ts"
import { getJson, startService } from "./support/ServiceProcess.ts"
import { processEnv } from "./support/TestConfig.ts"
import { freshDatabaseUrl } from "./support/TestDatabase.ts"

describe("production bundle", () => {
  it.live("npm run build, then npm run start:dist serves the bot", () =>
    Effect.gen(function*() {
      yield* Effect.promise(() => bundle("dist"))
      const probeDir = fs.mkdtempSync(path.join(os.tmpdir(), "bundle-probe-"))
      yield* Effect.addFinalizer(() => Effect.sync(() => fs.rmSync(probeDir, { recursive: true, force: true })))
      const loaded = path.join(probeDir, "loaded.json")
      const probe = path.join(probeDir, "probe.cjs")
      fs.writeFileSync(
        probe,
        // NODE_OPTIONS reaches npm's own process too: only the service's counts.
        `if (/dist[\\\\/]main\\.js$/.test(process.argv[1] ?? "")) process.on("exit", () => ` +
          `require("node:fs").writeFileSync(${JSON.stringify(loaded)}, ` +
          `JSON.stringify([...process.moduleLoadList, ...Object.keys(require.cache)])))\n`
      )
      const service = startService(
        {
          ...processEnv,
          DATABASE_URL: yield* freshDatabaseUrl,
          NODE_OPTIONS: `--require ${probe}`
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
      const modules: Array<string> = JSON.parse(fs.readFileSync(loaded, "utf8"))
      assert.isAbove(modules.length, 50, "the probe saw the service's modules")
      assert.deepStrictEqual(modules.filter((m) => /undici|http2|worker_threads/.test(m)), [], "no undici loaded")
    }))
})
