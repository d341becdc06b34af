/**
 * The chat flow's side of a generation: recording one the user asked for
 * (after the ratio button, or "🔁 Ещё вариант" / "🔄 Попробовать снова" on an
 * earlier one) and showing its status message. The engine does the rest.
 *
 * Gotchas: an update may run again after a crash, so everything here is
 * idempotent per update id: `Generations.create` finds the row this update
 * already made, and a retry this very update made does not count as the
 * failed generation's one retry.
 *
 * Every way to start one (ratio button, "🔁 Ещё вариант", "🔄 Попробовать
 * снова", a photo to edit, a reply to a delivered picture) goes through
 * `start`, so every one counts against the limits. A
 * refusal is counted in `zimage_generations_refused_total` by reason; the
 * first refusal by the global budget in a UTC day is also one ERROR line
 * (`[BUDGET]`), so an operator hears of it once, not once per request.
 */
import { DateTime, Effect, Metric, Option } from "effect"
import type { Generation, GenerationLimitReached, GenerationsShape, Limits } from "../generations/Generations.ts"
import { UpdateHandlerError } from "../dispatch/UpdateHandler.ts"
import type { ChatAction } from "./ChatFlowLogic.ts"
import type { Incoming } from "./ChatIncoming.ts"
import { type ChatReplies, type ChatUnreachable, orRetrySql, type ReplyTarget } from "./ChatReplies.ts"
import { type AspectRatio, type Lang, t } from "../texts/Messages.ts"
import { generationsRefused } from "../observability/Metrics.ts"

/** What to make: the prompt, the ratio and model, and for an edit its pictures. */
export interface Request {
  readonly prompt: string
  readonly aspectRatio: AspectRatio
  readonly model: string
  /** An edit's pictures as Telegram files (uploaded to Kie by the engine). */
  readonly inputFileIds?: ReadonlyArray<string> | undefined
  /** An edit's pictures already where Kie can fetch them. */
  readonly inputUrls?: ReadonlyArray<string> | undefined
  /** The album an edit's photos came in (its later photos join it). */
  readonly mediaGroupId?: string | undefined
}

/** Starting generations from the chat. */
export interface GenerationRequests {
  /**
   * Records a generation and shows its status message. `None` when a limit
   * stopped it (the user has been told why).
   */
  readonly start: (
    incoming: Incoming,
    lang: Lang,
    request: Request,
    updateId: number
  ) => Effect.Effect<Option.Option<Generation>, ChatUnreachable | UpdateHandlerError>
  /** "🔁 Ещё вариант" (after a delivered one) or "🔄 Попробовать снова" (after a failed one). */
  readonly repeat: (
    incoming: Incoming,
    lang: Lang,
    action: ChatAction & { _tag: "RepeatGeneration" },
    updateId: number
  ) => Effect.Effect<void, ChatUnreachable | UpdateHandlerError>
}

/** The requests, on `generations`, answering through `replies`. */
export const makeGenerationRequests = (
  generations: GenerationsShape,
  replies: ChatReplies,
  limits: Limits
): GenerationRequests => {
  const refused = makeRefusals(replies)
  const start = Effect.fn("ChatFlow.startGeneration")(function*(
    incoming: Incoming,
    lang: Lang,
    request: Request,
    updateId: number
  ) {
    const result = yield* generations.create(
      {
        userId: incoming.from.id,
        chatId: incoming.chatId,
        lang,
        ...request,
        sourceUpdateId: updateId,
        threadId: incoming.threadId
      },
      limits
    ).pipe(
      Effect.map(Option.some),
      Effect.catchTag(
        "GenerationLimitReached",
        (limit: GenerationLimitReached) => Effect.as(refused(incoming, lang, limit), Option.none())
      ),
      Effect.catchTag(
        "SqlError",
        (error) => new UpdateHandlerError({ message: `recording a generation: ${error.message}` })
      )
    )
    if (Option.isNone(result)) return Option.none<Generation>()
    const { created, generation } = result.value
    if (created) yield* Effect.logInfo("[FLOW] generation recorded", { generationId: generation.id })
    if (generation.statusMessageId === null) {
      const status = yield* replies.send(incoming, t(lang).generating)
      yield* orRetrySql(generations.setStatusMessage(generation.id, status.message_id, t(lang).generating))
    }
    return Option.some(generation)
  })

  const repeat = Effect.fn("ChatFlow.repeatGeneration")(function*(
    incoming: Incoming,
    lang: Lang,
    action: ChatAction & { _tag: "RepeatGeneration" },
    updateId: number
  ) {
    const source = yield* orRetrySql(generations.find(action.generationId))
    // In a group, someone else's picture: its buttons are theirs.
    if (Option.isSome(source) && source.value.userId !== incoming.from.id) {
      return yield* replies.answer(action.queryId, t(lang).notYourButton)
    }
    // Our own generation, finished the right way; a failed one retried only once
    // (this very update may be re-running after a crash, so its own retry counts as unused).
    // "Again" works as soon as the photo (which carries the button) is out, before the original follows.
    const usable = Option.filter(source, (g: Generation) =>
      g.userId === incoming.from.id &&
      (action.mode === "again"
        ? g.status === "delivered" || (g.status === "succeeded" && g.photoMessageId !== null)
        : g.status === "failed"))
    if (Option.isNone(usable)) return yield* replies.answer(action.queryId, t(lang).expired)
    const retriedBy = usable.value.retriedBy
    if (action.mode === "retry" && retriedBy !== null) {
      const retry = yield* orRetrySql(generations.find(retriedBy))
      if (Option.isNone(retry) || retry.value.sourceUpdateId !== updateId) {
        return yield* replies.answer(action.queryId, t(lang).expired)
      }
    }
    yield* replies.answer(action.queryId)
    // The same model, and for an edit the same pictures (uploaded already, when they were).
    const g = usable.value
    const started = yield* start(incoming, lang, {
      prompt: g.prompt,
      aspectRatio: g.aspectRatio,
      model: g.model,
      inputFileIds: g.inputFileIds.length > 0 ? g.inputFileIds : undefined,
      inputUrls: g.inputUrls ?? undefined
    }, updateId)
    if (Option.isSome(started) && action.mode === "retry") {
      yield* orRetrySql(generations.markRetried(usable.value.id, started.value.id))
      // The failure message's retry button has done its job.
      if (incoming.input._tag === "Callback" && incoming.input.messageId !== undefined) {
        yield* replies.removeKeyboard(incoming.chatId, incoming.input.messageId)
      }
    }
  })

  return { start, repeat }
}

/** The words for a refusal. */
const refusalText = (lang: Lang, limit: GenerationLimitReached): string => {
  switch (limit.kind) {
    case "busy":
      return t(lang).busy
    case "daily":
      return t(lang).dailyLimit(limit.limit)
    case "global":
      return t(lang).globalLimit
  }
}

/**
 * Telling a user why a generation was refused, counting it, and raising the
 * alarm on the first global-budget refusal of each UTC day (remembered in
 * this process: a new leader may say it once more that day).
 */
const makeRefusals = (replies: ChatReplies) => {
  let alarmedDay = ""
  const alarmOncePerDay = (limit: GenerationLimitReached) =>
    Effect.gen(function*() {
      const day = DateTime.formatIsoDateUtc(yield* DateTime.now)
      if (day === alarmedDay) return
      alarmedDay = day
      yield* Effect.logError(
        `[BUDGET] global daily generation limit of ${limit.limit} reached on ${day}: ` +
          "new generations are refused until 00:00 UTC (GLOBAL_DAILY_GENERATION_LIMIT)"
      )
    })
  return (to: ReplyTarget, lang: Lang, limit: GenerationLimitReached) =>
    Effect.gen(function*() {
      yield* Metric.update(Metric.withAttributes(generationsRefused, { reason: limit.kind }), 1)
      if (limit.kind === "global") yield* alarmOncePerDay(limit)
      yield* replies.send(to, refusalText(lang, limit))
    })
}
