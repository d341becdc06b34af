/**
 * The Z-Image chat flow: the `UpdateHandler` the dispatcher runs for every
 * message and callback query, one chat at a time in `update_id` order.
 *
 * It reads the chat's session, lets `ChatFlowLogic.transition` decide, carries
 * out the resulting actions (Telegram calls, recording a generation) and saves
 * the new state last, tagged with the update id. So:
 * - an update whose state was saved is never handled twice (skipped by id);
 * - an update interrupted half-way (crash, failover, Telegram error) is run
 *   again from the old state: its replies may be sent twice in that rare
 *   case, but nothing is lost, and the generation it asked for is recorded
 *   once (`Generations.create` is idempotent per update id).
 *
 * After the row exists, the generation engine (leader-only) does the rest:
 * Kie, status edits, delivery, failure messages.
 */
import { Data, Effect, Layer, Option, Predicate } from "effect"
import { AppConfig } from "../platform/AppConfig.ts"
import { type ChatAction, type ChatInput, type ChatState, Idle, transition } from "./ChatFlowLogic.ts"
import { ChatSessions } from "./ChatSessions.ts"
import { type Generation, GenerationLimitReached, Generations } from "../generations/Generations.ts"
import { type AspectRatio, type Lang, langOf, parseCallbackData, t } from "./Messages.ts"
import { Telegram, type TelegramError } from "../telegram/Telegram.ts"
import { type Update, UpdateHandler, UpdateHandlerError, type User } from "../dispatch/UpdateHandler.ts"

/** The chat blocked the bot (or is gone): the update is finished, nothing can be sent. */
class ChatUnreachable extends Data.TaggedError("ChatUnreachable")<{ readonly chatId: number }> {}

/** What one update means to the flow, or `undefined` when it is none of our business. */
interface Incoming {
  readonly chatId: number
  readonly chatType: string
  readonly from: User
  readonly input: ChatInput
}

/** `/start`, `/start@zimage_bot payload` → "start"; `undefined` for plain text. */
export const commandOf = (text: string): string | undefined => {
  const match = /^\/([A-Za-z0-9_]{1,32})(?:@[A-Za-z0-9_]{1,64})?(?:\s|$)/.exec(text)
  return match === null ? undefined : match[1]!.toLowerCase()
}

export const incomingOf = (update: Update): Incoming | undefined => {
  const message = update.message
  if (message !== undefined) {
    const from = message.from
    if (from === undefined || from.is_bot) return undefined
    const text = message.text
    const input: ChatInput = text === undefined
      ? { _tag: "NonText" }
      : Predicate.isNotUndefined(commandOf(text))
      ? { _tag: "Command", command: commandOf(text)! }
      : { _tag: "Text", text }
    return { chatId: message.chat.id, chatType: message.chat.type, from, input }
  }
  const query = update.callback_query
  if (query !== undefined) {
    return {
      // A button on an inline message has no chat: answer in the user's private chat.
      chatId: query.message?.chat.id ?? query.from.id,
      chatType: query.message?.chat.type ?? "private",
      from: query.from,
      input: {
        _tag: "Callback",
        queryId: query.id,
        data: parseCallbackData(query.data),
        messageId: query.message?.message_id
      }
    }
  }
  return undefined
}

const make = Effect.gen(function*() {
  const config = yield* AppConfig
  const telegram = yield* Telegram
  const sessions = yield* ChatSessions
  const generations = yield* Generations

  const limits = {
    maxActivePerUser: config.maxActiveGenerationsPerUser,
    dailyLimit: config.dailyGenerationLimit,
    timeout: config.generationTimeout
  }

  /**
   * A Telegram error either means "try the update again later"
   * (`UpdateHandlerError`: the dispatcher retries with backoff) or, for a chat
   * that blocked the bot, that nothing more can be said there.
   */
  const orRetry = <A>(what: string, effect: Effect.Effect<A, TelegramError>) =>
    effect.pipe(Effect.mapError((error) =>
      error._tag === "TelegramChatBlocked"
        ? new ChatUnreachable({ chatId: error.chatId })
        : new UpdateHandlerError({ message: `${what}: ${error.message}` })
    ))

  /** Calls whose failure must not hold up the flow (an old callback query, a keyboard already gone). */
  const bestEffort = (what: string, effect: Effect.Effect<void, TelegramError>) =>
    effect.pipe(Effect.catch((error) => Effect.logDebug(`[FLOW] ${what} skipped: ${error.message}`)))

  const send = (chatId: number, text: string, keyboard?: ChatAction & { _tag: "Send" }) =>
    orRetry(
      "sendMessage",
      telegram.sendMessage({
        chat_id: chatId,
        text,
        ...(keyboard?.keyboard === undefined ? {} : { reply_markup: keyboard.keyboard })
      })
    )

  const removeKeyboard = (chatId: number, messageId: number) =>
    bestEffort(
      "removing a keyboard",
      telegram.editMessageReplyMarkup({ chat_id: chatId, message_id: messageId, reply_markup: { inline_keyboard: [] } })
    )

  const answer = (queryId: string, text?: string) =>
    bestEffort(
      "answering a callback query",
      telegram.answerCallbackQuery({ callback_query_id: queryId, ...(text === undefined ? {} : { text }) })
    )

  /**
   * Records a generation and shows its status message. `None` when a limit
   * stopped it (the user has been told why).
   */
  const startGeneration = Effect.fn("ChatFlow.startGeneration")(function*(
    incoming: Incoming,
    lang: Lang,
    prompt: string,
    aspectRatio: AspectRatio,
    updateId: number
  ) {
    const result = yield* generations.create(
      { userId: incoming.from.id, chatId: incoming.chatId, lang, prompt, aspectRatio, sourceUpdateId: updateId },
      limits
    ).pipe(
      Effect.map(Option.some),
      Effect.catchTag("GenerationLimitReached", (limit: GenerationLimitReached) =>
        Effect.as(
          send(incoming.chatId, limit.kind === "busy" ? t(lang).busy : t(lang).dailyLimit(limit.limit)),
          Option.none()
        )),
      Effect.catchTag("SqlError", (error) => new UpdateHandlerError({ message: `recording a generation: ${error.message}` }))
    )
    if (Option.isNone(result)) return Option.none<Generation>()
    const { created, generation } = result.value
    if (created) yield* Effect.logInfo("[FLOW] generation recorded", { generationId: generation.id })
    if (generation.statusMessageId === null) {
      const status = yield* send(incoming.chatId, t(lang).generating)
      yield* generations.setStatusMessage(generation.id, status.message_id, t(lang).generating).pipe(
        Effect.catchTag("SqlError", (error) => new UpdateHandlerError({ message: error.message }))
      )
    }
    return Option.some(generation)
  })

  /** "🔁 Ещё вариант" (after a delivered one) or "🔄 Попробовать снова" (after a failed one). */
  const repeatGeneration = Effect.fn("ChatFlow.repeatGeneration")(function*(
    incoming: Incoming,
    lang: Lang,
    action: ChatAction & { _tag: "RepeatGeneration" },
    updateId: number
  ) {
    const source = yield* generations.find(action.generationId).pipe(
      Effect.catchTag("SqlError", (error) => new UpdateHandlerError({ message: error.message }))
    )
    // Our own generation, finished the right way; a failed one retried only once
    // (this very update may be re-running after a crash, so its own retry counts as unused).
    const usable = Option.filter(source, (g: Generation) =>
      g.userId === incoming.from.id &&
      (action.mode === "again" ? g.status === "delivered" : g.status === "failed"))
    if (Option.isNone(usable)) return yield* answer(action.queryId, t(lang).expired)
    const retriedBy = usable.value.retriedBy
    if (action.mode === "retry" && retriedBy !== null) {
      const retry = yield* generations.find(retriedBy).pipe(
        Effect.catchTag("SqlError", (error) => new UpdateHandlerError({ message: error.message }))
      )
      if (Option.isNone(retry) || retry.value.sourceUpdateId !== updateId) {
        return yield* answer(action.queryId, t(lang).expired)
      }
    }
    yield* answer(action.queryId)
    const started = yield* startGeneration(incoming, lang, usable.value.prompt, usable.value.aspectRatio, updateId)
    if (Option.isSome(started) && action.mode === "retry") {
      yield* generations.markRetried(usable.value.id, started.value.id).pipe(
        Effect.catchTag("SqlError", (error) => new UpdateHandlerError({ message: error.message }))
      )
      // The failure message's retry button has done its job.
      if (incoming.input._tag === "Callback" && incoming.input.messageId !== undefined) {
        yield* removeKeyboard(incoming.chatId, incoming.input.messageId)
      }
    }
  })

  const handle = Effect.fn("ChatFlow.handle")(function*(update: Update, context: { readonly updateId: number }) {
    const incoming = incomingOf(update)
    if (incoming === undefined) return
    const stored = yield* sessions.get(incoming.chatId).pipe(
      Effect.catchTag("SqlError", (error) => new UpdateHandlerError({ message: error.message }))
    )
    if (Option.isSome(stored) && stored.value.lastUpdateId >= context.updateId) return // handled before
    const before: ChatState = Option.match(stored, { onNone: () => Idle, onSome: (s) => s.state })
    const lang = incoming.from.language_code !== undefined
      ? langOf(incoming.from.language_code)
      : Option.match(stored, { onNone: () => "ru" as const, onSome: (s) => s.lang })

    // In groups, stay quiet unless spoken to: no welcome for every message.
    if (
      incoming.chatType !== "private" && before._tag === "Idle" &&
      (incoming.input._tag === "Text" || incoming.input._tag === "NonText")
    ) return

    const decided = transition(before, incoming.input, { lang, singleModelOnly: config.singleModelOnly })
    let state = decided.state
    for (const action of decided.actions) {
      switch (action._tag) {
        case "AnswerCallback":
          yield* answer(action.queryId, action.text)
          break
        case "Send": {
          const sent = yield* send(incoming.chatId, action.text, action)
          if (action.isRatioKeyboard === true && state._tag === "WaitingAspectRatio") {
            state = { ...state, keyboardMessageId: sent.message_id }
          }
          break
        }
        case "RemoveKeyboard":
          yield* removeKeyboard(incoming.chatId, action.messageId)
          break
        case "StartGeneration": {
          const started = yield* startGeneration(incoming, lang, action.prompt, action.aspectRatio, context.updateId)
          if (Option.isNone(started)) state = before
          else if (action.keyboardMessageId !== undefined) yield* removeKeyboard(incoming.chatId, action.keyboardMessageId)
          break
        }
        case "RepeatGeneration":
          yield* repeatGeneration(incoming, lang, action, context.updateId)
          break
      }
    }
    yield* sessions.save(incoming.chatId, incoming.from.id, { state, lang, lastUpdateId: context.updateId }).pipe(
      Effect.catchTag("SqlError", (error) => new UpdateHandlerError({ message: error.message }))
    )
  })

  return UpdateHandler.of({
    handle: (update, context) =>
      handle(update, context).pipe(
        // Retrying would not change that the user blocked the bot.
        Effect.catchTag("ChatUnreachable", (blocked) =>
          Effect.logInfo("[FLOW] chat blocked the bot; update dropped", { chatId: blocked.chatId }))
      )
  })
})

export const ChatFlowLive = Layer.effect(UpdateHandler, make)
