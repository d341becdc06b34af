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
 *
 * In groups each member has a conversation of their own (sessions are keyed
 * by chat and user), and the bot speaks only when spoken to: a command
 * addressed to it (not `/start@otherbot`), a button, or a reply to one of its
 * messages from someone it is waiting for. Answers go to the forum topic the
 * update came from.
 *
 * Parts: `ChatIncoming` reads the update, `ChatFlowLogic` decides,
 * `ChatReplies` answers, `GenerationRequests` records generations,
 * `ChatSessions` keeps the state, `BotIdentity` knows the bot's own name.
 */
import { Effect, Layer, Option } from "effect"
import { AppConfig } from "../platform/AppConfig.ts"
import { makeAccess } from "./Access.ts"
import { type ChatState, Idle, transition } from "./ChatFlowLogic.ts"
import { type BotIdentity, isOurName, makeBotIdentity } from "./BotIdentity.ts"
import { type Incoming, incomingOf } from "./ChatIncoming.ts"
import { type ChatUnreachable, makeChatReplies, orRetrySql } from "./ChatReplies.ts"
import { ChatSessions } from "./ChatSessions.ts"
import { makeGenerationRequests } from "./GenerationRequests.ts"
import { Generations } from "../generations/Generations.ts"
import { langOf } from "../texts/Messages.ts"
import { Telegram } from "../telegram/Telegram.ts"
import { type Update, type UpdateContext, UpdateHandler, type UpdateHandlerError } from "../dispatch/UpdateHandler.ts"
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
    case "NonText": {
      const repliesTo = incoming.repliesTo
      if (before._tag === "Idle" || repliesTo === undefined || !repliesTo.is_bot) return Effect.succeed(false)
      return Effect.map(botIdentity, (me) => me.id === repliesTo.id)
    }
  }
}

const make = Effect.gen(function*() {
  const config = yield* AppConfig
  const sessions = yield* ChatSessions
  const telegram = yield* Telegram
  const replies = makeChatReplies(telegram)
  const botIdentity = makeBotIdentity(telegram)
  const access = makeAccess(config.allowedUserIds, replies)
  const requests = makeGenerationRequests(yield* Generations, replies, {
    maxActivePerUser: config.maxActiveGenerationsPerUser,
    dailyLimit: config.dailyGenerationLimit,
    globalDailyLimit: config.globalDailyGenerationLimit,
    timeout: config.generationTimeout
  })

  const handle = Effect.fn("ChatFlow.handle")(function*(update: Update, context: UpdateContext) {
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

    const decided = transition(before, incoming.input, { lang, singleModelOnly: config.singleModelOnly })
    let state = decided.state
    for (const action of decided.actions) {
      switch (action._tag) {
        case "AnswerCallback":
          yield* replies.answer(action.queryId, action.text)
          break
        case "Send": {
          const sent = yield* replies.send(incoming, action.text, action)
          if (action.isRatioKeyboard === true && state._tag === "WaitingAspectRatio") {
            state = { ...state, keyboardMessageId: sent.message_id }
          }
          break
        }
        case "RemoveKeyboard":
          yield* replies.removeKeyboard(incoming.chatId, action.messageId)
          break
        case "StartGeneration": {
          const started = yield* requests.start(incoming, lang, action.prompt, action.aspectRatio, context.updateId)
          if (Option.isNone(started)) state = before
          else if (action.keyboardMessageId !== undefined) {
            yield* replies.removeKeyboard(incoming.chatId, action.keyboardMessageId)
          }
          break
        }
        case "RepeatGeneration":
          yield* requests.repeat(incoming, lang, action, context.updateId)
          break
      }
    }
    const session = { state, lang, lastUpdateId: context.updateId }
    yield* orRetrySql(sessions.save(incoming.chatId, incoming.from.id, session))
  })

  return UpdateHandler.of({
    handle: (update, context) =>
      handle(update, context).pipe(
        // Retrying would not change that the user blocked the bot.
        Effect.catchTag(
          "ChatUnreachable",
          (blocked) => Effect.logInfo("[FLOW] chat blocked the bot; update dropped", { chatId: blocked.chatId })
        )
      )
  })
})

/** The chat flow as the dispatcher's `UpdateHandler`. */
export const ChatFlowLive = Layer.effect(UpdateHandler, make)
