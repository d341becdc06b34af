/**
 * Leader election between real OS processes of the service on one database.
 * These claims are about wall-clock time across process boundaries (a killed
 * process, the kernel closing its socket, the server releasing the lock, the
 * standby's next try), so they run on the live clock and measure with it.
 * Waits are event-driven: a log line appearing, a process exiting.
 */
import { assert, describe, it } from "@effect/vitest"
import { Effect } from "effect"
import { getJson, type ServiceProcess, startService } from "./support/ServiceProcess.ts"
import { processEnv } from "./support/TestConfig.ts"
import { freshDatabaseUrl } from "./support/TestDatabase.ts"

const env = {
  ...processEnv,
  LOG_LEVEL: "info"
}

const ACTIVE_LINE = "[LOCK] ✅ ACTIVE MODE: PostgreSQL advisory lock acquired"

const messages = (service: ServiceProcess) =>
  service.lines().flatMap((line) => {
    try {
      return [String(JSON.parse(line).message)]
    } catch {
      return []
    }
  })

/** Starts an instance and waits until it has settled as ACTIVE or PASSIVE. */
const start = (databaseUrl: string, name: string, expect: "active" | "passive") =>
  Effect.promise(async () => {
    const service = startService({ ...env, DATABASE_URL: databaseUrl, INSTANCE_ID: name })
    await service.waitForLine((l) => l.includes(expect === "active" ? ACTIVE_LINE : "PASSIVE_WAIT"))
    const port = await service.port()
    return { service, port }
  })

const health = (port: number) => Effect.promise(() => getJson(port, "/health"))

/** Milliseconds from `act` until `service` logs that it became ACTIVE and /health says so. */
const takeover = (act: () => void, next: { service: ServiceProcess; port: number }) =>
  Effect.promise(async () => {
    const started = performance.now()
    act()
    await next.service.waitForLine((l) => l.includes(ACTIVE_LINE), 10_000)
    const report = await getJson(next.port, "/health")
    const elapsed = performance.now() - started
    return { elapsed, report }
  })

describe("LeaderLock across processes", () => {
  it.live(
    "kill -9 of the ACTIVE instance: the standby reports active on /health within 2 s; SIGTERM hands over cleanly",
    () =>
      Effect.gen(function*() {
        const databaseUrl = yield* freshDatabaseUrl
        const first = yield* start(databaseUrl, "first", "active")
        const second = yield* start(databaseUrl, "second", "passive")
        yield* Effect.addFinalizer(() =>
          Effect.sync(() => {
            for (const p of [first, second]) p.service.kill("SIGKILL")
          })
        )

        assert.include(
          messages(second.service).find((m) => m.includes("PASSIVE_WAIT")),
          "zimage-bot leader first",
          "the standby names the holder"
        )
        const before = yield* health(second.port)
        assert.strictEqual(before.status, 200)
        assert.deepInclude(before.body, { status: "ok", active: false, role: "passive" })
        assert.deepInclude((yield* health(first.port)).body, { status: "ok", active: true, role: "active" })

        // kill -9: no finalizer runs; the kernel closes the socket and the
        // server drops the session and its lock.
        const killed = yield* takeover(() => first.service.kill("SIGKILL"), second)
        assert.strictEqual(killed.report.status, 200)
        assert.deepInclude(killed.report.body, { active: true, role: "active" })
        assert.isBelow(killed.elapsed, 2000, `takeover after kill -9 took ${killed.elapsed} ms`)
        assert.strictEqual(yield* Effect.promise(() => first.service.exited), "SIGKILL")

        // SIGTERM: the ACTIVE instance releases the lock and exits 0.
        const third = yield* start(databaseUrl, "third", "passive")
        yield* Effect.addFinalizer(() => Effect.sync(() => third.service.kill("SIGKILL")))
        const terminated = yield* takeover(() => second.service.kill("SIGTERM"), third)
        assert.deepInclude(terminated.report.body, { active: true, role: "active" })
        assert.isBelow(terminated.elapsed, 2000, `takeover after SIGTERM took ${terminated.elapsed} ms`)
        assert.strictEqual(yield* Effect.promise(() => second.service.exited), 0)
        const log = messages(second.service)
        const order = [
          "[LOCK] releasing leadership",
          "[LOCK_CONTROLLER] State transition: ACTIVE → PASSIVE",
          "[STATE_SYNC] active_state: True -> False (reason=released)",
          "[LOCK] 🔓 PostgreSQL advisory lock released"
        ].map((marker) => log.findIndex((m) => m.includes(marker)))
        assert.isTrue(order.every((index, i) => index >= 0 && (i === 0 || index > order[i - 1]!)), log.join("\n"))

        console.info(
          `[measure] takeover: kill -9 → standby active on /health ${killed.elapsed.toFixed(0)} ms; ` +
            `SIGTERM → standby active on /health ${terminated.elapsed.toFixed(0)} ms`
        )
        third.service.kill("SIGTERM")
        assert.strictEqual(yield* Effect.promise(() => third.service.exited), 0)
      }),
    60_000
  )
})
