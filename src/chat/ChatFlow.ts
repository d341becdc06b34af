/**
 * The Z-Image chat flow: the `UpdateHandler` the dispatcher runs for every
 * message and callback query, one chat at a time in `update_id` order.
 *
 * It reads the chat's session, lets `ChatFlowLogic.transition` decide, carries
 * out the resulting actions (Telegram calls, recording a generation) and
 * hands the new state, tagged with the update id, to the dispatcher, which
 * saves it last, in the transaction that marks the update done (fenced by the
 * leadership term: a deposed leader saves nothing). So:
 * - an update whose state was saved is never handled twice (skipped by id);
 * - an update interrupted half-way (crash, failover, Telegram error) is run
 *   again from the old state: its replies may be sent twice in that rare
 *   case, but nothing is lost, and the generation it asked for is recorded
 *   once (`Generations.create` is idempotent per update id).
 *
 * After the row exists, the generation engine (leader-only) does the rest:
 * Kie, status edits, delivery, failure messages.
 *
 * In groups each member has a conversation of their own (sessions are keyed
 * by chat and user), and the bot speaks only when spoken to: a command
 * addressed to it (not `/start@otherbot`), a button, or a reply to one of its
 * messages from someone it is waiting for. Answers go to the forum topic the
 * update came from.
 *
 * Models and edits: the models offered (MODELS) and the user's remembered
 * choice go into the flow's settings; a photo, a reply to a delivered
 * picture or an album's later photo becomes an edit request (the engine
 * uploads the pictures before createTask). In a group a photo speaks to the
 * bot when its caption names it or it replies to the bot.
 *
 * Parts: `ChatIncoming` reads the update, `ChatFlowLogic` decides,
 * `ChatReplies` answers, `GenerationRequests` records generations,
 * `ChatSessions` keeps the state, `BotIdentity` knows the bot's own name.
 */
import { DateTime, Duration, Effect, Layer, Option } from "effect"
import { AppConfig, type AppConfigShape } from "../platform/AppConfig.ts"
import { makeAccess } from "./Access.ts"
import { type ChatAction, type ChatState, Idle, modelOption, transition } from "./ChatFlowLogic.ts"
import { type BotIdentity, isOurName, makeBotIdentity } from "./BotIdentity.ts"
import { type Incoming, incomingOf } from "./ChatIncoming.ts"
import { type ChatUnreachable, makeChatReplies, orRetrySql } from "./ChatReplies.ts"
import { ChatSessions, type SessionEntry } from "./ChatSessions.ts"
import { makeGenerationRequests } from "./GenerationRequests.ts"
import { Generations } from "../generations/Generations.ts"
import { type Lang, langOf, t } from "../texts/Messages.ts"
import { modelOf } from "../kie/ModelCatalog.ts"
import { Telegram } from "../telegram/Telegram.ts"
import {
  type FinishWrite,
  type Update,
  type UpdateContext,
  UpdateHandler,
  type UpdateHandlerError
} from "../dispatch/UpdateHandler.ts"
import { floodReply } from "./FloodReply.ts"

/**
 * Whether a group update is meant for the bot. Commands: unless addressed to
 * another bot. Texts and other messages: only from a member the bot is
 * waiting for, and only as a reply to one of its messages (with privacy mode
 * on, that is all Telegram sends anyway; with it off, chatter stays chatter).
 * Buttons: always (whose they are is the flow's business).
 */
const spokenTo = (
  incoming: Incoming,
  before: ChatState,
  botIdentity: Effect.Effect<BotIdentity, ChatUnreachable | UpdateHandlerError>
): Effect.Effect<boolean, ChatUnreachable | UpdateHandlerError> => {
  switch (incoming.input._tag) {
    case "Callback":
      return Effect.succeed(true)
    case "Command": {
      const addressedTo = incoming.addressedTo
      if (addressedTo === undefined) return Effect.succeed(true)
      return Effect.map(botIdentity, (me) => isOurName(me, addressedTo))
    }
    case "Text":
    case "NonText":
    case "Photo": {
      const repliesTo = incoming.repliesTo
      // A photo whose caption names the bot speaks to it (privacy mode delivers such messages).
      const named = incoming.input._tag === "Photo" ? incoming.addressedTo : undefined
      if (named !== undefined && (repliesTo === undefined || !repliesTo.is_bot)) {
        return Effect.map(botIdentity, (me) => isOurName(me, named))
      }
      // A reply to the bot's picture edits it, and a photo in reply to the bot is one to edit, whatever the state.
      const editsOurs = (incoming.input._tag === "Text" && incoming.input.editsMessageId !== undefined) ||
        incoming.input._tag === "Photo"
      if ((before._tag === "Idle" && !editsOurs) || repliesTo === undefined || !repliesTo.is_bot) {
        return Effect.succeed(false)
      }
      return Effect.map(botIdentity, (me) => me.id === repliesTo.id)
    }
  }
}

/**
 * How long a delivered picture's stored result URL is used for an edit of
 * it. Kie says its result URLs "usually expire after 24 h"; an older picture
 * is edited from Telegram's copy of it instead (downloaded and uploaded again).
 */
const RESULT_URL_TRUST = Duration.hours(20)

/** The models and editing as the flow sees them, from the configuration. */
const flowModels = (config: AppConfigShape) => {
  const editModel = Option.getOrUndefined(config.editModel)
  return {
    models: config.models.map(modelOption),
    editModel,
    editing: editModel !== undefined,
    editMaxPrompt: editModel === undefined ? undefined : modelOption(editModel).maxPrompt,
    editMaxImages: editModel === undefined ? 1 : (modelOf(editModel).images?.max ?? 1)
  }
}

const make = Effect.gen(function*() {
  const config = yield* AppConfig
  const sessions = yield* ChatSessions
  const telegram = yield* Telegram
  const replies = makeChatReplies(telegram)
  const botIdentity = makeBotIdentity(telegram)
  const access = makeAccess(config.allowedUserIds, replies)
  const generations = yield* Generations
  const requests = makeGenerationRequests(generations, replies, {
    maxActivePerUser: config.maxActiveGenerationsPerUser,
    dailyLimit: config.dailyGenerationLimit,
    globalDailyLimit: config.globalDailyGenerationLimit,
    timeout: config.generationTimeout
  })

  const models = flowModels(config)

  /** Carries out one action; returns the state to keep (the one before, when a limit stopped a generation). */
  const run = (
    action: ChatAction,
    incoming: Incoming,
    lang: Lang,
    updateId: number,
    state: ChatState,
    before: ChatState
  ): Effect.Effect<ChatState, ChatUnreachable | UpdateHandlerError> =>
    Effect.gen(function*() {
      switch (action._tag) {
        case "AnswerCallback":
          yield* replies.answer(action.queryId, action.text)
          return state
        case "Send": {
          const sent = yield* replies.send(incoming, action.text, action)
          return action.isRatioKeyboard === true && state._tag === "WaitingAspectRatio"
            ? { ...state, keyboardMessageId: sent.message_id }
            : state
        }
        case "RemoveKeyboard":
          yield* replies.removeKeyboard(incoming.chatId, action.messageId)
          return state
        case "StartGeneration": {
          const { aspectRatio, model, prompt } = action
          const started = yield* requests.start(incoming, lang, { prompt, aspectRatio, model }, updateId)
          if (Option.isNone(started)) return before
          if (action.keyboardMessageId !== undefined) {
            yield* replies.removeKeyboard(incoming.chatId, action.keyboardMessageId)
          }
          return state
        }
        case "StartEdit":
        case "EditDelivered": {
          const request = yield* editRequest(action, incoming)
          const started = yield* requests.start(incoming, lang, request, updateId)
          return Option.isNone(started) ? before : state
        }
        case "JoinAlbum": {
          const joined = yield* orRetrySql(
            generations.joinAlbum(incoming.from.id, action.mediaGroupId, action.fileId, models.editMaxImages)
          )
          if (joined !== "none") return state
          // No edit of this album waits (its caption was refused, or it is uploading): ask what to change.
          const ask = { _tag: "Send", text: t(lang).askEdit, asksForReply: true } as const
          yield* replies.send(incoming, ask.text, ask)
          return { _tag: "WaitingEdit", fileIds: [action.fileId], mediaGroupId: action.mediaGroupId }
        }
        case "RepeatGeneration":
          yield* requests.repeat(incoming, lang, action, updateId)
          return state
      }
    })

  /**
   * What an edit makes: the user's photos (uploaded by the engine), or for a
   * reply to a delivered picture that picture's stored result (Telegram's
   * copy when the bot no longer has it).
   */
  const editRequest = (action: ChatAction & { _tag: "StartEdit" | "EditDelivered" }, incoming: Incoming) =>
    Effect.gen(function*() {
      const base = { prompt: action.prompt, aspectRatio: "auto" as const, model: models.editModel ?? "" }
      if (action._tag === "StartEdit") {
        return { ...base, inputFileIds: action.fileIds, mediaGroupId: action.mediaGroupId }
      }
      const source = yield* orRetrySql(generations.findByResultMessage(incoming.chatId, action.messageId))
      const fresh = yield* Effect.map(
        DateTime.now,
        (now) =>
          Option.filter(source, (g) => DateTime.isGreaterThan(DateTime.addDuration(g.createdAt, RESULT_URL_TRUST), now))
      )
      const stored = Option.getOrUndefined(fresh)?.resultUrls[0]
      return stored === undefined ? { ...base, inputFileIds: action.fileIds } : { ...base, inputUrls: [stored] }
    })

  const handleUntraced = Effect.fnUntraced(function*(update: Update, context: UpdateContext) {
    const incoming = incomingOf(update)
    if (incoming === undefined || (yield* access.refused(incoming))) return
    if (context.flood === "notice" || context.flood === "quiet") {
      return yield* floodReply(incoming, context.flood, replies)
    }
    const stored = yield* orRetrySql(sessions.get(incoming.chatId, incoming.from.id))
    if (Option.isSome(stored) && stored.value.lastUpdateId >= context.updateId) return // handled before
    const before: ChatState = Option.match(stored, { onNone: () => Idle, onSome: (s) => s.state })
    const lang = incoming.from.language_code !== undefined
      ? langOf(incoming.from.language_code)
      : Option.match(stored, { onNone: () => "ru" as const, onSome: (s) => s.lang })

    if (incoming.chatType !== "private" && !(yield* spokenTo(incoming, before, botIdentity))) return

    const chosenModel = Option.getOrUndefined(stored)?.model
    const decided = transition(before, incoming.input, {
      lang,
      singleModelOnly: config.singleModelOnly,
      models: models.models,
      chosenModel,
      editing: models.editing,
      editMaxPrompt: models.editMaxPrompt,
      editMaxImages: models.editMaxImages
    })
    let state = decided.state
    for (const action of decided.actions) state = yield* run(action, incoming, lang, context.updateId, state, before)
    const session = { state, lang, lastUpdateId: context.updateId, model: decided.model ?? chosenModel }
    // Saved by the dispatcher in the transaction that marks the update done.
    const write: SessionWrite = {
      updateId: context.updateId,
      chatId: incoming.chatId,
      userId: incoming.from.id,
      session
    }
    return write
  })

  return UpdateHandler.of({
    writeFinished: (writes) => sessions.saveMany(writes.filter(isSessionWrite)),
    handle: (update, context) =>
      handleUntraced(update, context).pipe(
        // A span without `Effect.fn`'s stack trace captures: they are measurable CPU on every update.
        Effect.withSpan("ChatFlow.handle", undefined, { captureStackTrace: false }),
        // Retrying would not change that the user blocked the bot.
        Effect.catchTag(
          "ChatUnreachable",
          (blocked) => Effect.logInfo("[FLOW] chat blocked the bot; update dropped", { chatId: blocked.chatId })
        )
      )
  })
})

/** The state an update reached, saved with its finish (`UpdateHandler.writeFinished`). */
interface SessionWrite extends FinishWrite, SessionEntry {}

const isSessionWrite = (write: FinishWrite): write is SessionWrite => "session" in write && "chatId" in write

/** The chat flow as the dispatcher's `UpdateHandler`. */
export const ChatFlowLive = Layer.effect(UpdateHandler, make)
