/**
 * `GET /health`: always 200 while the process serves, on ACTIVE and PASSIVE
 * instances alike (Render restarts an instance whose health check fails).
 *
 * Services contribute fields (leadership, queue depth, in-flight generations)
 * by registering a probe, so this module does not depend on all of them. A
 * probe that fails or takes longer than a second is skipped for that request:
 * the health check itself must never hang or fail.
 *
 * What comes from the database (the ping and the probes registered with
 * `register`) is read at most about once a second (`DATABASE_READ_TTL`, on the
 * Effect clock) and shared by every request meanwhile: a monitor polling
 * `/health` in a tight loop costs one query burst a second, not one per call.
 * Probes of the process's own state (`registerLive`: leadership) are read for
 * every answer, so a takeover shows at once.
 */
import { Context, Duration, Effect, Layer, Ref } from "effect"
import { HttpRouter, HttpServerResponse } from "effect/http"
import { readFileSync } from "node:fs"
import { AppConfig } from "../platform/AppConfig.ts"
import { Database } from "../database/Database.ts"

export type HealthFields = Readonly<Record<string, unknown>>

/**
 * The service's version from its `package.json`: two folders up from this
 * module in the source tree, one up from the bundle in `dist/`.
 */
export const version: string = (() => {
  for (const candidate of ["../../package.json", "../package.json"]) {
    try {
      const manifest = JSON.parse(readFileSync(new URL(candidate, import.meta.url), "utf8"))
      if (manifest.name === "zimage-bot") return String(manifest.version)
    } catch {
      // not there: try the next place
    }
  }
  return "unknown"
})()

/** How long `/health` reuses what it read from the database: it reads at most about once per this. */
export const DATABASE_READ_TTL: Duration.Duration = Duration.seconds(1)

/** A probe skipped for one report when it fails or takes longer than this. */
const PROBE_TIMEOUT = "1 second"

const bounded = (probe: Effect.Effect<HealthFields>) =>
  probe.pipe(Effect.timeout(PROBE_TIMEOUT), Effect.catchCause(() => Effect.succeed({} as HealthFields)))

/** What the database part of a report found: the ping and the fields of the database probes. */
interface DatabaseReading {
  readonly dbUp: boolean
  readonly fields: ReadonlyArray<HealthFields>
}

export class Health extends Context.Service<Health, {
  /**
   * Adds fields read from the database (queue depth, generation counts):
   * `/health` serves them up to `DATABASE_READ_TTL` old, so calling it often
   * costs the database nothing more. Later probes win on the same key.
   */
  readonly register: (probe: Effect.Effect<HealthFields>) => Effect.Effect<void>
  /** Adds fields of this process's own state (leadership), read afresh for every answer. */
  readonly registerLive: (probe: Effect.Effect<HealthFields>) => Effect.Effect<void>
  /** Every field, read now (for code and tests in this process). */
  readonly report: Effect.Effect<HealthFields>
  /** What `GET /health` answers: live probes read now, the database part at most `DATABASE_READ_TTL` old. */
  readonly served: Effect.Effect<HealthFields>
}>()("zimage-bot/Health") {
  static readonly layer = Layer.effect(
    Health,
    Effect.gen(function*() {
      const config = yield* AppConfig
      const database = yield* Database
      const databaseProbes = yield* Ref.make<ReadonlyArray<Effect.Effect<HealthFields>>>([])
      const liveProbes = yield* Ref.make<ReadonlyArray<Effect.Effect<HealthFields>>>([])
      const startedAt = Date.now()

      const readDatabase: Effect.Effect<DatabaseReading> = Effect.gen(function*() {
        const probes = yield* Ref.get(databaseProbes)
        const [dbUp, ...fields] = yield* Effect.all([database.ping, ...probes.map(bounded)], {
          concurrency: "unbounded"
        })
        return { dbUp: dbUp as boolean, fields: fields as Array<HealthFields> }
      })
      // Shared by concurrent requests, reused until it is DATABASE_READ_TTL old (by the Effect clock).
      const [recentDatabase, forgetDatabase] = yield* Effect.cachedInvalidateWithTTL(readDatabase, DATABASE_READ_TTL)

      const assemble = (reading: DatabaseReading) =>
        Effect.gen(function*() {
          const live = yield* Effect.forEach(yield* Ref.get(liveProbes), bounded, { concurrency: "unbounded" })
          const state = yield* database.state
          return Object.assign(
            { status: "ok", active: false, role: "passive", queue_depth: 0 },
            ...reading.fields,
            ...live,
            {
              db: reading.dbUp ? "ok" : state === "starting" ? "starting" : "down",
              db_kind: database.kind,
              mode: config.publicUrl._tag === "Some" ? "webhook" : "polling",
              instance_id: config.instanceId,
              version,
              uptime_s: Math.round((Date.now() - startedAt) / 1000)
            }
          ) as HealthFields
        })

      return Health.of({
        register: (probe) => Ref.update(databaseProbes, (all) => [...all, probe]).pipe(Effect.andThen(forgetDatabase)),
        registerLive: (probe) => Ref.update(liveProbes, (all) => [...all, probe]),
        report: Effect.flatMap(readDatabase, assemble),
        served: Effect.flatMap(recentDatabase, assemble)
      })
    })
  )
}

/** `GET /health`: always 200; the database is read at most about once a second however often it is called. */
export const HealthRoute = HttpRouter.add(
  "GET",
  "/health",
  Effect.gen(function*() {
    const health = yield* Health
    const fields = yield* health.served
    return HttpServerResponse.jsonUnsafe(fields, { headers: { "cache-control": "no-store" } })
  })
)
