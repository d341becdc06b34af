/**
 * The inbox on `/health` and `/metrics`: `queue_depth` (stored, not yet
 * finished), `updates_processing`, `dead_updates`, `oldest_pending_age_s`, and
 * the gauges `zimage_queue_depth` and `zimage_queue_oldest_pending_seconds`,
 * all read from the table at probe time (so they are right on PASSIVE
 * instances too).
 *
 * Gotchas: a failed read leaves the fields out (health) or the gauges as they
 * were (metrics); `/health` and `/metrics` time their probes out, so a slow
 * database never hangs them.
 */
import { DateTime, Effect, Metric, Option } from "effect"
import type { SqlError } from "effect/sql/SqlError"
import { Health } from "../observability/Health.ts"
import * as Metrics from "../observability/Metrics.ts"
import * as UtcTime from "../platform/UtcTime.ts"
import type { InboxStats } from "./sql/counts.ts"

/** Registers the inbox's health fields and gauges, read through `stats`. */
export const registerInboxHealth = (
  stats: Effect.Effect<InboxStats, SqlError>
): Effect.Effect<void, never, Health | Metrics.MetricsRefresh> =>
  Effect.gen(function*() {
    const health = yield* Health
    const metrics = yield* Metrics.MetricsRefresh
    const current = Effect.gen(function*() {
      const counts = yield* stats
      const now = yield* DateTime.now
      const oldestPendingAgeSeconds = Option.match(counts.oldestPendingReceivedAt, {
        onNone: () => 0,
        onSome: (at) => UtcTime.toSeconds(UtcTime.age(now, at))
      })
      return { counts, oldestPendingAgeSeconds }
    })
    yield* health.register(
      current.pipe(
        Effect.map(({ counts, oldestPendingAgeSeconds }) => ({
          queue_depth: counts.queueDepth,
          updates_processing: counts.processing,
          dead_updates: counts.dead,
          oldest_pending_age_s: oldestPendingAgeSeconds
        })),
        Effect.orElseSucceed(() => ({}))
      )
    )
    yield* metrics.register(
      current.pipe(
        Effect.flatMap(({ counts, oldestPendingAgeSeconds }) =>
          Effect.andThen(
            Metric.update(Metrics.queueDepth, counts.queueDepth),
            Metric.update(Metrics.queueOldestPendingSeconds, oldestPendingAgeSeconds)
          )
        ),
        Effect.ignore
      )
    )
  })
