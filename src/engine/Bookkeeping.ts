/**
 * What every part of the engine writes besides Telegram and Kie: the state
 * lines operators grep (`[GEN] generation <id>: <from> → <to>`), the database
 * writes that record a change, and the outcome counter.
 *
 * When to use: any state change of a generation a part makes.
 *
 * Gotchas: `bookkeeping` never fails; a write the database refuses for about
 * two minutes is logged as an ERROR and yields `None`. The caller decides what
 * that means (usually: the sweep finds the row again later).
 */
import { DateTime, Effect, Metric } from "effect"
import type { SqlError } from "effect/sql/SqlError"
import { generationsFinished } from "../observability/Metrics.ts"
import { bookkeepingPolicy } from "../platform/Retry.ts"

/** How a generation ended, as counted by `generations_finished_total`. */
export type FinishOutcome = "delivered" | "failed" | "timeout"

/** The `[GEN] generation <id>: <change> (task <taskId>): <detail>` line, annotated with the ids. */
export const logState = (id: string, change: string, taskId?: string | null, detail?: string) =>
  Effect.logInfo(
    `[GEN] generation ${id}: ${change}${taskId ? ` (task ${taskId})` : ""}${detail ? `: ${detail}` : ""}`
  ).pipe(Effect.annotateLogs({ generation_id: id, ...(taskId ? { task_id: taskId } : {}) }))

/** A state write retried through a blip; logged and `None` if the database stays away. */
export const bookkeeping = <A>(what: string, effect: Effect.Effect<A, SqlError>) =>
  effect.pipe(
    Effect.retry(bookkeepingPolicy),
    Effect.tapError((error) => Effect.logError(`[GEN] could not record ${what}: ${error.message}`)),
    Effect.option
  )

/** Counts a generation that reached its end. */
export const finished = (outcome: FinishOutcome) =>
  Metric.update(Metric.withAttributes(generationsFinished, { outcome }), 1)

/** Seconds from `from` to `to`, never negative. */
export const secondsBetween = (from: DateTime.Utc, to: DateTime.Utc) =>
  Math.max(0, (DateTime.toEpochMillis(to) - DateTime.toEpochMillis(from)) / 1000)

/**
 * The forum topic of a generation's messages as a send parameter: the
 * engine sends long after the update, from the row alone, and an answer
 * outside the topic would land in the group's General topic.
 */
export const inTopicOf = (g: { readonly threadId: number | null }): { readonly message_thread_id?: number } =>
  g.threadId === null ? {} : { message_thread_id: g.threadId }
