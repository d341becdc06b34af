/**
 * How the chat flow talks back, and what its failures mean to the dispatcher.
 *
 * Details: a failure either means "try the update again later"
 * (`UpdateHandlerError`: the dispatcher retries with backoff) or, for a chat
 * that blocked the bot, that nothing more can be said there (`ChatUnreachable`:
 * the update is finished). Calls whose failure must not hold up the flow (an
 * old callback query, a keyboard already gone) are best effort: logged at
 * debug level and forgotten.
 */
import { Data, Effect } from "effect"
import type { SqlError } from "effect/sql/SqlError"
import type { Message } from "grammy/types"
import { UpdateHandlerError } from "../dispatch/UpdateHandler.ts"
import type { TelegramError, TelegramShape } from "../telegram/Telegram.ts"
import type { ChatAction } from "./ChatFlowLogic.ts"

/** The chat blocked the bot (or is gone): the update is finished, nothing can be sent. */
export class ChatUnreachable extends Data.TaggedError("ChatUnreachable")<{ readonly chatId: number }> {}

/**
 * A Telegram failure as "retry the update later" (after Telegram's wait, for
 * a flood limit), or `ChatUnreachable` for a blocked chat.
 */
export const orRetry = <A>(what: string, effect: Effect.Effect<A, TelegramError>) =>
  effect.pipe(Effect.mapError((error) => {
    if (error._tag === "TelegramChatBlocked") return new ChatUnreachable({ chatId: error.chatId })
    const message = `${what}: ${error.message}`
    return error._tag === "TelegramRateLimited"
      ? new UpdateHandlerError({ message, waitMillis: error.retryAfterSeconds * 1000 })
      : new UpdateHandlerError({ message })
  }))

/** A database failure as "retry the update later". */
export const orRetrySql = <A, R>(effect: Effect.Effect<A, SqlError, R>): Effect.Effect<A, UpdateHandlerError, R> =>
  Effect.mapError(effect, (error) => new UpdateHandlerError({ message: error.message }))

/** Where a reply goes: the chat, its forum topic, and in a group the user's message it answers. */
export interface ReplyTarget {
  readonly chatId: number
  readonly chatType: string
  readonly threadId: number | undefined
  readonly userMessageId: number | undefined
}

/**
 * Where and how a reply is sent. Private chats get plain messages, as always.
 * In a group a reply quotes the user's message (so everyone, and the bot
 * later, can tell whom it answers) and a request for text forces a reply from
 * that user alone: with privacy mode on, the bot sees nothing else they write.
 */
export const placementOf = (to: ReplyTarget, asksForReply: boolean) => {
  const group = to.chatType !== "private"
  return {
    ...(to.threadId === undefined ? {} : { message_thread_id: to.threadId }),
    ...(group && to.userMessageId !== undefined
      ? { reply_parameters: { message_id: to.userMessageId, allow_sending_without_reply: true } }
      : {}),
    ...(group && asksForReply ? { reply_markup: { force_reply: true as const, selective: true } } : {})
  }
}

/** The replies the flow makes. */
export interface ChatReplies {
  /** Sends `text` to `to`, with the action's keyboard if it has one. */
  readonly send: (
    to: ReplyTarget,
    text: string,
    action?: ChatAction & { _tag: "Send" }
  ) => Effect.Effect<Message.TextMessage, ChatUnreachable | UpdateHandlerError>
  /** Takes the inline keyboard off a message (best effort). */
  readonly removeKeyboard: (chatId: number, messageId: number) => Effect.Effect<void>
  /** Answers a callback query, with a notice if `text` is given (best effort). */
  readonly answer: (queryId: string, text?: string) => Effect.Effect<void>
}

/** The replies, through `telegram`. */
export const makeChatReplies = (telegram: TelegramShape): ChatReplies => {
  const bestEffort = (what: string, effect: Effect.Effect<void, TelegramError>) =>
    effect.pipe(Effect.catch((error) => Effect.logDebug(`[FLOW] ${what} skipped: ${error.message}`)))
  return {
    send: (to, text, action) =>
      orRetry(
        "sendMessage",
        telegram.sendMessage({
          chat_id: to.chatId,
          text,
          ...placementOf(to, action?.asksForReply === true),
          ...(action?.keyboard === undefined ? {} : { reply_markup: action.keyboard })
        })
      ),
    removeKeyboard: (chatId, messageId) =>
      bestEffort(
        "removing a keyboard",
        telegram.editMessageReplyMarkup({
          chat_id: chatId,
          message_id: messageId,
          reply_markup: { inline_keyboard: [] }
        })
      ),
    answer: (queryId, text) =>
      bestEffort(
        "answering a callback query",
        telegram.answerCallbackQuery({ callback_query_id: queryId, ...(text === undefined ? {} : { text }) })
      )
  }
}
