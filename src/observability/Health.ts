/**
 * `GET /health`: always 200 while the process serves, on ACTIVE and PASSIVE
 * instances alike (Render restarts an instance whose health check fails).
 *
 * Services contribute fields (leadership, queue depth, in-flight generations)
 * by registering a probe, so this module does not depend on all of them. A
 * probe that fails or takes longer than a second is skipped for that request:
 * the health check itself must never hang or fail.
 */
import { Context, Effect, Layer, Ref } from "effect"
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

export class Health extends Context.Service<Health, {
  /** Adds fields to every report; later probes win on the same key. */
  readonly register: (probe: Effect.Effect<HealthFields>) => Effect.Effect<void>
  readonly report: Effect.Effect<HealthFields>
}>()("zimage-bot/Health") {
  static readonly layer = Layer.effect(
    Health,
    Effect.gen(function*() {
      const config = yield* AppConfig
      const database = yield* Database
      const probes = yield* Ref.make<ReadonlyArray<Effect.Effect<HealthFields>>>([])
      const startedAt = Date.now()

      const report = Effect.gen(function*() {
        const registered = yield* Ref.get(probes)
        const [dbUp, ...fields] = yield* Effect.all(
          [
            database.ping,
            ...registered.map((probe) =>
              probe.pipe(
                Effect.timeout("1 second"),
                Effect.catchCause(() => Effect.succeed({} as HealthFields))
              )
            )
          ],
          { concurrency: "unbounded" }
        )
        const state = yield* database.state
        return Object.assign(
          {
            status: "ok",
            active: false,
            role: "passive",
            queue_depth: 0
          },
          ...(fields as Array<HealthFields>),
          {
            db: dbUp ? "ok" : state === "starting" ? "starting" : "down",
            db_kind: database.kind,
            mode: config.publicUrl._tag === "Some" ? "webhook" : "polling",
            instance_id: config.instanceId,
            version,
            uptime_s: Math.round((Date.now() - startedAt) / 1000)
          }
        ) as HealthFields
      })

      return Health.of({
        register: (probe) => Ref.update(probes, (all) => [...all, probe]),
        report
      })
    })
  )
}

export const HealthRoute = HttpRouter.add(
  "GET",
  "/health",
  Effect.gen(function*() {
    const health = yield* Health
    const fields = yield* health.report
    return HttpServerResponse.jsonUnsafe(fields, { headers: { "cache-control": "no-store" } })
  })
)
