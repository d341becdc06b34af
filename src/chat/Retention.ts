/**
 * Retention (ACTIVE only): a pass when leadership starts, then every
 * `RETENTION_INTERVAL`. Each pass deletes, in batches, finished generations
 * (delivered or failed) created more than GENERATION_RETENTION_DAYS ago and
 * chat sessions untouched for as long: the prompts, chat ids and result URLs
 * the bot no longer needs. Unfinished generations are never touched.
 *
 * Why delete rather than anonymise: nothing reads an old row. The daily
 * limits count only today's rows, and retention is at least a day, so a row
 * they count is never deleted; a "🔁 Ещё вариант" press on a deleted
 * generation is answered as an expired button.
 *
 * It lives in `chat` because it clears both the generations and the chat
 * sessions tables, and `chat` is the first folder that may use both. Time
 * comes from `Clock`, so tests drive it with `TestClock`.
 */
import { DateTime, Duration, Effect, Layer, Schedule } from "effect"
import { SqlClient } from "effect/sql/SqlClient"
import type { SqlError } from "effect/sql/SqlError"
import { AppConfig } from "../platform/AppConfig.ts"
import { Generations } from "../generations/Generations.ts"
import { repeatLogged } from "../platform/Supervised.ts"
import { migrationSessionsUpdatedAt, purgeSessions } from "./sql/retention.ts"

/** The session index of migration 0010 (the generations index is in `generations/sql/migrate.ts`). */
export const migration = migrationSessionsUpdatedAt

/** How often a pass runs: retention is counted in days, so hourly is plenty. */
export const RETENTION_INTERVAL = Duration.hours(1)
/** Rows deleted per statement: short transactions that never hold many locks. */
export const RETENTION_BATCH = 1000
/** Batches per table per pass; a larger backlog (retention just shortened) takes several passes. */
export const RETENTION_MAX_BATCHES = 20

/** What one pass deleted. */
export interface RetentionReport {
  readonly generations: number
  readonly sessions: number
}

/** Runs `purge` (one batch) until a batch comes back short or `RETENTION_MAX_BATCHES` ran; the total deleted. */
const inBatches = (purge: Effect.Effect<number, SqlError>): Effect.Effect<number, SqlError> =>
  Effect.gen(function*() {
    let total = 0
    for (let batch = 0; batch < RETENTION_MAX_BATCHES; batch++) {
      const deleted = yield* purge
      total += deleted
      if (deleted < RETENTION_BATCH) break
    }
    return total
  })

/** One retention pass, on the current configuration; exposed so tests can run passes directly. */
export const make = Effect.gen(function*() {
  const config = yield* AppConfig
  const generations = yield* Generations
  const sql = yield* SqlClient
  const days = Math.round(Duration.toHours(config.generationRetention) / 24)

  const pass: Effect.Effect<RetentionReport, SqlError> = Effect.gen(function*() {
    const before = DateTime.subtractDuration(yield* DateTime.now, config.generationRetention)
    const report = {
      generations: yield* inBatches(generations.purgeFinished(before, RETENTION_BATCH)),
      sessions: yield* inBatches(purgeSessions(sql, before, RETENTION_BATCH))
    }
    if (report.generations > 0 || report.sessions > 0) {
      yield* Effect.logInfo(
        `[RETENTION] deleted ${report.generations} finished generation(s) and ${report.sessions} chat session(s) ` +
          `older than ${days} day(s)`
      )
    }
    return report
  }).pipe(Effect.withSpan("Retention.pass"))

  return { pass }
})

/** Retention for one leadership term: a pass now, then every `RETENTION_INTERVAL`. */
export const layer: Layer.Layer<never, never, AppConfig | Generations | SqlClient> = Layer.effectDiscard(
  Effect.gen(function*() {
    const retention = yield* make
    yield* repeatLogged(retention.pass, Schedule.spaced(RETENTION_INTERVAL), {
      failing: (error) => `[RETENTION] pass failed, trying again next interval: ${error.message}`,
      recovered: "[RETENTION] passes work again"
    }).pipe(Effect.forkScoped)
  })
)
