/**
 * Recording a new generation: one transaction that finds the row an update
 * already made, or checks the user's limits, inserts a `queued` row and
 * announces it on `CHANNEL` (delivered at commit).
 *
 * Gotchas: a user's requests take turns on an advisory lock, so two clicks at
 * once cannot both pass the limits. With a global budget, every request that
 * passed its user's limits then takes turns on one more advisory lock, held
 * to commit, so the count it reads includes every row committed before it
 * and no two requests can take the last place (always user lock first, then
 * the global one: no deadlock).
 */
import { DateTime, type Duration, Effect, Schema } from "effect"
import type { SqlClient } from "effect/sql/SqlClient"
import type { AspectRatio, Lang } from "../../texts/Messages.ts"
import { countSince } from "./count.ts"
import { asDate, decodeRows, type Generation, unfinished } from "./row.ts"

/** The NOTIFY channel a new generation is announced on: it wakes the engine on the ACTIVE instance. */
export const CHANNEL = "generations"

/**
 * The user has as many generations in flight (`busy`) or made today (`daily`)
 * as allowed, or all users together made today's budget (`global`).
 */
export class GenerationLimitReached extends Schema.TaggedError<GenerationLimitReached>()("GenerationLimitReached", {
  kind: Schema.Literals(["busy", "daily", "global"]),
  limit: Schema.Int,
  message: Schema.String
}) {}

/** What the chat flow asks for. */
export interface NewGeneration {
  readonly userId: number
  readonly chatId: number
  readonly lang: Lang
  readonly prompt: string
  readonly aspectRatio: AspectRatio
  /** The Kie model id; Z-Image when left out. */
  readonly model?: string | undefined
  /** The update that asked for it: handling that update again finds this row instead of making another. */
  readonly sourceUpdateId: number
  /** The forum topic it was asked in, if any. */
  readonly threadId?: number | undefined
  /** An edit's pictures as Telegram files, to upload before createTask. */
  readonly inputFileIds?: ReadonlyArray<string> | undefined
  /** An edit's pictures already where Kie can fetch them (no upload). */
  readonly inputUrls?: ReadonlyArray<string> | undefined
  /** The album the photos came in (its later photos join the row). */
  readonly mediaGroupId?: string | undefined
}

/** How much one user may ask for, and how long a generation may take. */
export interface Limits {
  readonly maxActivePerUser: number
  /** 0: no daily limit. Counted per UTC day, failed generations excluded. */
  readonly dailyLimit: number
  /** Absent or 0: no budget. All users together, per UTC day, failed generations excluded. */
  readonly globalDailyLimit?: number
  readonly timeout: Duration.Duration
}

/**
 * The user's generations still in flight (unfinished, and not a picture that
 * is already in the chat with only its original file to follow), and those
 * made since `startOfDay` that did not fail.
 */
const userCounts = (sql: SqlClient, userId: number, startOfDay: DateTime.Utc) =>
  sql<{ active: bigint; today: bigint }>`
    SELECT
      count(*) FILTER (
        WHERE status IN (${unfinished}) AND NOT (status = 'succeeded' AND photo_message_id IS NOT NULL)
      ) AS active,
      count(*) FILTER (WHERE created_at >= ${asDate(startOfDay)} AND status <> 'failed') AS today
    FROM generations WHERE user_id = ${userId}`.pipe(
    Effect.map(([counts]) => ({ active: Number(counts!.active), today: Number(counts!.today) }))
  )

const checkLimits = (userId: number, limits: Limits, counts: { readonly active: number; readonly today: number }) => {
  if (counts.active >= limits.maxActivePerUser) {
    return Effect.fail(
      new GenerationLimitReached({
        kind: "busy",
        limit: limits.maxActivePerUser,
        message: `user ${userId} already has ${counts.active} generation(s) in flight`
      })
    )
  }
  if (limits.dailyLimit > 0 && counts.today >= limits.dailyLimit) {
    return Effect.fail(
      new GenerationLimitReached({
        kind: "daily",
        limit: limits.dailyLimit,
        message: `user ${userId} reached the daily limit of ${limits.dailyLimit}`
      })
    )
  }
  return Effect.void
}

/**
 * Waits for the global budget's turn (until commit), then refuses if today's
 * generations of all users, failed ones excluded, already fill it.
 */
const checkGlobalBudget = (sql: SqlClient, limit: number, startOfDay: DateTime.Utc) =>
  Effect.gen(function*() {
    yield* sql`SELECT pg_advisory_xact_lock(hashtext('zimage-bot/generations/global'), 0)`
    const today = yield* countSince(sql, startOfDay)
    if (today >= limit) {
      return yield* new GenerationLimitReached({
        kind: "global",
        limit,
        message: `all users together reached the global daily limit of ${limit}`
      })
    }
  })

const insert = (sql: SqlClient, input: NewGeneration, at: DateTime.Utc, deadline: DateTime.Utc) =>
  sql`
    INSERT INTO generations
      (user_id, chat_id, lang, prompt, aspect_ratio, model, status, source_update_id, created_at, deadline_at,
        updated_at, message_thread_id, input_file_ids, input_urls, media_group_id)
    VALUES (${input.userId}, ${input.chatId}, ${input.lang}, ${input.prompt}, ${input.aspectRatio},
      ${input.model ?? "z-image"}, 'queued', ${input.sourceUpdateId}, ${asDate(at)}, ${asDate(deadline)}, ${asDate(at)},
      ${input.threadId ?? null}, ${jsonOrNull(input.inputFileIds)}::jsonb, ${jsonOrNull(input.inputUrls)}::jsonb,
      ${input.mediaGroupId ?? null})
    RETURNING *`.pipe(Effect.flatMap(decodeRows), Effect.map((rows) => rows[0]!))

const jsonOrNull = (list: ReadonlyArray<string> | undefined) => (list === undefined ? null : JSON.stringify(list))

/** Records a generation (or finds the one `sourceUpdateId` already made) and wakes the engine. */
export const create = (sql: SqlClient, input: NewGeneration, limits: Limits) =>
  Effect.gen(function*() {
    const at = yield* DateTime.now
    return yield* sql.withTransaction(Effect.gen(function*() {
      yield* sql`SELECT pg_advisory_xact_lock(hashtext('zimage-bot/generations/user'), hashtext(${
        String(input.userId)
      }))`
      const existing = yield* sql`SELECT * FROM generations WHERE source_update_id = ${input.sourceUpdateId}`.pipe(
        Effect.flatMap(decodeRows)
      )
      if (existing.length > 0) return { generation: existing[0]!, created: false }
      const startOfDay = DateTime.startOf(at, "day")
      yield* checkLimits(input.userId, limits, yield* userCounts(sql, input.userId, startOfDay))
      const budget = limits.globalDailyLimit ?? 0
      if (budget > 0) yield* checkGlobalBudget(sql, budget, startOfDay)
      const generation: Generation = yield* insert(sql, input, at, DateTime.addDuration(at, limits.timeout))
      // Delivered at commit: wakes the engine on the ACTIVE instance.
      yield* sql`SELECT pg_notify(${CHANNEL}, ${generation.id})`
      return { generation, created: true }
    }))
  })
