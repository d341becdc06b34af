/**
 * The "⏳ Генерирую..." status message of each waiting generation: kept
 * current while it waits, removed once the picture is delivered.
 *
 * When to use: `loop` runs for the term; `finalize` when a generation is
 * delivered (or the sweep finds its status message still open);
 * `beforeFinalEdit` right before any edit that must be the message's last
 * (the failure notice).
 *
 * Details: each tick reads the rows whose message may need an edit, and edits
 * it to the queue position (`queued`), then the elapsed time; at most every
 * STATUS_EDIT_INTERVAL per message, STATUS_CHAT_SPACING per chat and
 * STATUS_EDITS_PER_TICK per tick, and only when the text changes. It runs in
 * its own fiber so an edit never delays a submission or a delivery.
 *
 * Gotchas: a progress edit and the final edit of one message must not cross.
 * A tick decides on its edits from rows it read before, so without a guard
 * its "⏳ … 1:00" could reach Telegram after the failure notice and wipe its
 * text and retry button. The guard, per generation:
 *
 * | event                       | progress edit in flight        | final edit begun |
 * | --------------------------- | ------------------------------ | ---------------- |
 * | tick starts                 | (the previous tick's ended)    | cleared          |
 * | progress edit starts        | registered (skipped if begun)  | unchanged        |
 * | progress edit ends          | removed, its waiters go on     | unchanged        |
 * | `beforeFinalEdit`           | awaited                        | set              |
 *
 * Clearing at the start of a tick is safe: rows read from then on are
 * already final in the database, so no progress edit is chosen for them.
 */
import { DateTime, Deferred, Duration, Effect, Exit, Option, Result, Schedule } from "effect"
import type { SqlError } from "effect/sql/SqlError"
import { t } from "../texts/Messages.ts"
import { type Generation, Generations } from "../generations/Generations.ts"
import { repeatLogged } from "../platform/Supervised.ts"
import { Telegram, type TelegramError } from "../telegram/Telegram.ts"
import { bookkeeping, secondsBetween } from "./Bookkeeping.ts"

/** How often status messages are considered for an edit. */
export const STATUS_TICK = Duration.seconds(2)
/** One status message is edited at most this often. */
export const STATUS_EDIT_INTERVAL = Duration.seconds(10)
/** Edits in one chat are at least this far apart (groups allow about 20 a minute). */
export const STATUS_CHAT_SPACING = Duration.seconds(3)
/** Status edits per tick, all chats together. */
export const STATUS_EDITS_PER_TICK = 20
/** Telegram errors that mean "try again later". */
export const TRANSIENT_TELEGRAM = new Set<TelegramError["_tag"]>([
  "TelegramNetworkError",
  "TelegramServerError",
  "TelegramRateLimited"
])

/** The status messages of one term. */
export interface StatusMessages {
  /** One pass: the edits due now. */
  readonly tick: Effect.Effect<void, SqlError>
  /** `tick` every STATUS_TICK for the term, a failure logged once. */
  readonly loop: Effect.Effect<never>
  /** Before a final edit of `id`'s status message: no progress edit starts after this, and one being sent has ended. */
  readonly beforeFinalEdit: (id: string) => Effect.Effect<void>
  /** Deletes (or, failing that, finalizes) a status message that still shows progress, and forgets it. */
  readonly finalize: (g: Generation, messageId: number) => Effect.Effect<void>
}

/** The text a waiting generation's status message should show now. */
export const desiredStatus = (g: Generation, positions: ReadonlyMap<string, number>, now: DateTime.Utc) => {
  const texts = t(g.lang)
  if (g.status === "queued") {
    const position = positions.get(g.id)
    return position === undefined ? texts.generating : texts.generatingQueued(position)
  }
  return texts.generatingElapsed(secondsBetween(g.createdAt, now))
}

/** The status messages of a term. */
export const make: Effect.Effect<StatusMessages, never, Generations | Telegram> = Effect.gen(function*() {
  const generations = yield* Generations
  const telegram = yield* Telegram

  /** Last status edit per chat (epoch millis). */
  const chatEditedAt = new Map<number, number>()
  /** Progress edits being sent, by generation. */
  const progressEditsInFlight = new Map<string, Deferred.Deferred<void>>()
  /** Generations whose final edit has begun: no progress edit may touch them any more. */
  const finalEditBegun = new Set<string>()

  const beforeFinalEdit = (id: string) =>
    Effect.suspend(() => {
      finalEditBegun.add(id)
      const inFlight = progressEditsInFlight.get(id)
      return inFlight === undefined ? Effect.void : Deferred.await(inFlight)
    })

  /** Sends a progress edit unless the generation's final edit has begun; registers it while it is out. */
  const whileNotFinal = <A>(id: string, send: Effect.Effect<A>): Effect.Effect<Option.Option<A>> =>
    Effect.suspend(() => {
      if (finalEditBegun.has(id) || progressEditsInFlight.has(id)) return Effect.succeedNone
      const done = Deferred.makeUnsafe<void>()
      progressEditsInFlight.set(id, done)
      return Effect.asSome(send).pipe(
        Effect.ensuring(Effect.sync(() => {
          progressEditsInFlight.delete(id)
          Deferred.doneUnsafe(done, Exit.void)
        }))
      )
    })

  const editStatus = (g: Generation, messageId: number, text: string) =>
    Effect.gen(function*() {
      const attempt = yield* whileNotFinal(
        g.id,
        Effect.result(telegram.editMessageText({ chat_id: g.chatId, message_id: messageId, text }))
      )
      if (Option.isNone(attempt)) return
      const edited = attempt.value
      if (Result.isSuccess(edited)) return yield* generations.setStatusText(g.id, text)
      const error = edited.failure
      // Deleted by the user, or not editable: stop editing it; a failure notice will be a new message.
      if (error._tag === "TelegramBadRequest") return yield* generations.clearStatusMessage(g.id, messageId)
      yield* Effect.logDebug(`[GEN] status edit of generation ${g.id} skipped: ${error.message}`)
    }).pipe(Effect.catch((error) => Effect.logDebug(`[GEN] status edit: ${error.message}`)))

  const tick = Effect.gen(function*() {
    // The previous tick's edits have all ended; this tick reads fresh rows.
    finalEditBegun.clear()
    const now = yield* DateTime.now
    const nowMillis = DateTime.toEpochMillis(now)
    const spacing = Duration.toMillis(STATUS_CHAT_SPACING)
    for (const [chat, at] of chatEditedAt) if (nowMillis - at >= spacing) chatEditedAt.delete(chat)
    const rows = yield* generations.statusesToRefresh(DateTime.subtractDuration(now, STATUS_EDIT_INTERVAL), 500)
    if (rows.length === 0) return
    const positions = rows.some((g) => g.status === "queued")
      ? new Map((yield* generations.queuePositions).map((p) => [p.id, p.position]))
      : new Map<string, number>()
    const edits: Array<{ g: Generation; messageId: number; text: string }> = []
    for (const g of rows) {
      if (edits.length >= STATUS_EDITS_PER_TICK) break
      if (g.statusMessageId === null || chatEditedAt.has(g.chatId)) continue
      const text = desiredStatus(g, positions, now)
      if (text === g.statusText) continue
      chatEditedAt.set(g.chatId, nowMillis)
      edits.push({ g, messageId: g.statusMessageId, text })
    }
    yield* Effect.forEach(edits, (e) => editStatus(e.g, e.messageId, e.text), { concurrency: 5, discard: true })
  })

  const finalize = (g: Generation, messageId: number) =>
    Effect.gen(function*() {
      yield* beforeFinalEdit(g.id)
      const deleted = yield* Effect.result(telegram.deleteMessage({ chat_id: g.chatId, message_id: messageId }))
      if (Result.isFailure(deleted)) {
        const error = deleted.failure
        if (TRANSIENT_TELEGRAM.has(error._tag)) return // the sweep tries again
        if (error._tag === "TelegramBadRequest") {
          // Too old to delete, or already gone: leave it saying it is done.
          yield* telegram.editMessageText({ chat_id: g.chatId, message_id: messageId, text: t(g.lang).done }).pipe(
            Effect.ignore
          )
        }
      }
      yield* bookkeeping(`the status message of generation ${g.id}`, generations.clearStatusMessage(g.id, messageId))
    })

  const loop = repeatLogged(tick, Schedule.spaced(STATUS_TICK), {
    failing: (error) => `[GEN] status updates failed, retrying: ${error.message}`,
    recovered: "[GEN] status updates work again"
  })

  return { tick, loop, beforeFinalEdit, finalize }
})
