/**
 * Failing a generation and telling its user, once.
 *
 * When to use: `fail` wherever a generation cannot go on (Kie refused it,
 * its task failed, its deadline passed, its result could not be sent);
 * `start` from the sweep for every failed row whose user was not told yet.
 *
 * Details: `fail` marks the row `failed` (from any unfinished status), counts
 * it, and starts the notice as a job keyed `notify:<id>`. The notice is
 * "❌ …" with the reason and the retry button:
 *
 * | the row has        | Telegram answers             | then                                 |
 * | ------------------ | ---------------------------- | ------------------------------------ |
 * | a status message   | edit accepted / chat blocked | told (the status message consumed)   |
 * | a status message   | 400 (gone, not editable)     | forgotten; a new message instead     |
 * | a status message   | anything else                | the sweep tries again                |
 * | no status message  | sent                         | told (new message)                   |
 * | no status message  | chat blocked / 400           | told (nobody to tell), logged        |
 * | no status message  | anything else                | the sweep tries again                |
 *
 * Gotchas: a new message has a duplicate window (sent, then a crash before
 * `notified_at` is recorded sends it again); an edit repeated is harmless.
 */
import { Effect, Option, Result } from "effect"
import { retryKeyboard, t } from "../texts/Messages.ts"
import { type Generation, Generations } from "../generations/Generations.ts"
import { Telegram } from "../telegram/Telegram.ts"
import { bookkeeping, finished, type FinishOutcome, inTopicOf, logState } from "./Bookkeeping.ts"
import type { EngineTerm } from "./EngineTerm.ts"
import type { StatusMessages } from "./StatusMessages.ts"

/** Failing generations and telling their users. */
export interface FailureNotices {
  /**
   * Fails `g` (any unfinished status; `from` names it in the log) and starts
   * telling its user `reason`. False when the row was already finished or the
   * database refused.
   */
  readonly fail: (
    g: Generation,
    code: string,
    message: string,
    reason: string | undefined,
    outcome?: FinishOutcome,
    from?: Generation["status"]
  ) => Effect.Effect<boolean>
  /** Starts the notice of a failed generation as a job (nothing if one runs or it was told). */
  readonly start: (id: string) => Effect.Effect<void>
  /** Tells a failed generation's user, unless told already; never fails (the sweep retries). */
  readonly notify: (id: string) => Effect.Effect<void>
}

/** The failure notices of a term. */
export const make = (
  term: EngineTerm,
  status: Pick<StatusMessages, "beforeFinalEdit">
): Effect.Effect<FailureNotices, never, Generations | Telegram> =>
  Effect.gen(function*() {
    const generations = yield* Generations
    const telegram = yield* Telegram

    const notify = Effect.fn("Engine.notify")(function*(id: string) {
      yield* Effect.annotateCurrentSpan("generation_id", id)
      const found = yield* generations.find(id)
      if (Option.isNone(found)) return
      const g = found.value
      if (g.status !== "failed" || Option.isSome(g.notifiedAt)) return
      const text = t(g.lang).failed(g.failReason ?? t(g.lang).unavailable)
      const reply_markup = retryKeyboard(g.lang, g.id)
      const told = (consumed?: number) =>
        Effect.gen(function*() {
          yield* bookkeeping(`the failure notice of generation ${g.id}`, generations.markNotified(g.id, consumed))
          yield* logState(g.id, consumed === undefined ? "user told (new message)" : "user told (status message)")
        })
      if (g.statusMessageId !== null) {
        yield* status.beforeFinalEdit(g.id)
        const edited = yield* Effect.result(
          telegram.editMessageText({ chat_id: g.chatId, message_id: g.statusMessageId, text, reply_markup })
        )
        if (Result.isSuccess(edited)) return yield* told(g.statusMessageId)
        const error = edited.failure
        if (error._tag === "TelegramChatBlocked") return yield* told(g.statusMessageId)
        if (error._tag !== "TelegramBadRequest") {
          return yield* Effect.logWarning(
            `[GEN] telling generation ${g.id}'s user failed, trying again later: ${error.message}`
          )
        }
        // The status message is gone or cannot be edited: a new message instead.
        yield* generations.clearStatusMessage(g.id, g.statusMessageId)
      }
      const sent = yield* Effect.result(
        telegram.sendMessage({ chat_id: g.chatId, ...inTopicOf(g), text, reply_markup })
      )
      if (Result.isSuccess(sent)) return yield* told()
      const error = sent.failure
      if (error._tag === "TelegramChatBlocked" || error._tag === "TelegramBadRequest") {
        yield* Effect.logInfo(`[GEN] generation ${g.id}: its user cannot be told (${error.message})`)
        return yield* told()
      }
      yield* Effect.logWarning(`[GEN] telling generation ${g.id}'s user failed, trying again later: ${error.message}`)
    }, (effect, id) =>
      effect.pipe(
        Effect.catch((error) =>
          Effect.logWarning(`[GEN] notifying generation ${id}: ${error.message}; the sweep retries`)
        )
      ))

    const start = (id: string) => term.startJob(`notify:${id}`, notify(id))

    const fail = (
      g: Generation,
      code: string,
      message: string,
      reason: string | undefined,
      outcome: FinishOutcome = "failed",
      from: Generation["status"] = g.status
    ) =>
      Effect.gen(function*() {
        const marked = yield* bookkeeping(
          `generation ${g.id} as failed`,
          generations.markFailed(g.id, code, message, reason)
        )
        if (Option.isNone(marked) || !marked.value) return false
        yield* logState(g.id, `${from} → failed (${code})`, g.kieTaskId, message)
        yield* finished(outcome)
        yield* start(g.id)
        return true
      })

    return { fail, start, notify }
  })
