/**
 * A LISTEN that keeps itself connected.
 *
 * When to use: a leader-only loop that wants to hear `NOTIFY <channel>` as
 * soon as a row is committed, and has a sweep or a poll that finds the same
 * work more slowly when notifications are lost.
 *
 * Details: `onListening` runs each time LISTEN is confirmed, first and after
 * every reconnect, so work stored while nobody listened is picked up then.
 * A lost connection is logged once and re-established by `listenPolicy`;
 * the recovery is logged once.
 *
 * Gotchas: a notification sent while the connection was down is gone; only
 * `onListening` (and the caller's sweep) make up for it.
 */
import { PgClient } from "@effect/sql-pg"
import { Effect, Queue } from "effect"
import { listenPolicy } from "../platform/Retry.ts"
import { makeProblemLog } from "../platform/ProblemLog.ts"

/** What a listener does and how it names itself in the log. */
export interface ListenOptions<R> {
  /** The NOTIFY channel. */
  readonly channel: string
  /** Log marker of the owning module, e.g. `[DISPATCH]`. */
  readonly marker: string
  /** What covers for lost notifications, for the warning (e.g. "the sweep covers meanwhile"). */
  readonly fallback: string
  /** Runs once LISTEN is confirmed, before any notification is handled. */
  readonly onListening: Effect.Effect<void, never, R>
  /** Runs for each notification, in order. */
  readonly onNotification: (payload: string) => Effect.Effect<void, never, R>
}

/** Listens on `options.channel` forever, reconnecting by `listenPolicy`. */
export const listenForever = <R>(options: ListenOptions<R>): Effect.Effect<never, never, PgClient.PgClient | R> =>
  Effect.gen(function*() {
    const pg = yield* PgClient.PgClient
    const problems = makeProblemLog()
    const session = Effect.gen(function*() {
      const notifications = yield* pg.listen(options.channel)
      yield* options.onListening
      const again = yield* problems.recovered(`${options.marker} listening on ${options.channel} again`)
      if (!again) yield* Effect.logDebug(`${options.marker} listening on ${options.channel}`)
      return yield* Queue.take(notifications).pipe(
        Effect.flatMap((notification) => options.onNotification(notification.payload)),
        Effect.forever
      )
    }).pipe(
      Effect.scoped,
      Effect.tapError((error) =>
        problems.failing(
          `${options.marker} LISTEN ${options.channel} failed, reconnecting (${options.fallback}): ${error.message}`
        )
      ),
      Effect.retry(listenPolicy)
    )
    return yield* Effect.orDie(session)
  })
