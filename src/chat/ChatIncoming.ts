/**
 * What an update means to the chat flow: the chat, the sender and the
 * `ChatInput` (a command, text, something else, or a button press), or
 * nothing when the update is none of the flow's business.
 *
 * Groups add three facts the flow needs: the forum topic to answer in, the
 * user's message to reply to (so `force_reply` with `selective` reaches only
 * them), and whose message a text replies to or a button was shown on.
 */
import type { Message, Update, User } from "../dispatch/UpdateHandler.ts"
import type { RepliedMessage } from "../telegram/TelegramUpdate.ts"
import type { ChatInput } from "./ChatFlowLogic.ts"
import { parseCallbackData } from "../texts/Messages.ts"
import { BOT_DOWNLOAD_LIMIT } from "../telegram/TelegramFiles.ts"

/** What one update means to the flow. */
export interface Incoming {
  readonly chatId: number
  readonly chatType: string
  readonly from: User
  readonly input: ChatInput
  /** The forum topic the update came from: every answer goes back there. */
  readonly threadId: number | undefined
  /**
   * The user's own message this update is about: the message itself, or for
   * a button the message the bot's message answered. Replies in groups quote it.
   */
  readonly userMessageId: number | undefined
  /** The bot a command is addressed to (`/start@zimage_bot` → "zimage_bot"). */
  readonly addressedTo: string | undefined
  /** The sender of the message a text replies to; for a button, whom its message answered. */
  readonly repliesTo: User | undefined
}

/** A command's name and the bot it names, if any. */
export interface Command {
  readonly command: string
  readonly bot: string | undefined
}

/** `/start`, `/start@zimage_bot payload` → start (and zimage_bot); `undefined` for plain text. */
export const parseCommand = (text: string): Command | undefined => {
  const match = /^\/([A-Za-z0-9_]{1,32})(?:@([A-Za-z0-9_]{1,64}))?(?:\s|$)/.exec(text)
  return match === null ? undefined : { command: match[1]!.toLowerCase(), bot: match[2] }
}

/**
 * The message `message` really replies to: not the "topic created" message
 * Telegram puts there for every message in a forum topic that replies to nothing.
 */
const repliedOf = (message: Message | undefined): RepliedMessage | undefined => {
  const replied = message?.reply_to_message
  return replied === undefined || replied.forum_topic_created !== undefined ? undefined : replied
}

/** A topic of a forum (not the reply thread of an ordinary supergroup, which sends cannot name). */
const topicOf = (message: Message | undefined): number | undefined =>
  message?.is_topic_message === true ? message.message_thread_id : undefined

/** The picture a message carries: a photo's largest size, or an image sent as a file. */
export const pictureOf = (
  message: Pick<Message, "photo" | "document">
): { readonly fileId: string; readonly size: number | undefined } | undefined => {
  const largest = message.photo?.at(-1)
  if (largest !== undefined) return { fileId: largest.file_id, size: largest.file_size }
  const document = message.document
  if (document !== undefined && /^image\/(jpeg|png|webp)$/i.test(document.mime_type ?? "")) {
    return { fileId: document.file_id, size: document.file_size }
  }
  return undefined
}

/** A text: a command, an edit of the bot's picture it replies to, or plain text. */
const textInput = (message: Message, text: string): ChatInput => {
  const command = parseCommand(text)
  if (command !== undefined) return { _tag: "Command", command: command.command }
  const replied = repliedOf(message)
  const picture = replied?.from?.is_bot === true ? pictureOf(replied) : undefined
  return picture === undefined
    ? { _tag: "Text", text }
    : { _tag: "Text", text, editsMessageId: replied!.message_id, repliedFileIds: [picture.fileId] }
}

const inputOf = (message: Message): ChatInput => {
  if (message.text !== undefined) return textInput(message, message.text)
  const picture = pictureOf(message)
  if (picture === undefined) return { _tag: "NonText" }
  return {
    _tag: "Photo",
    fileIds: [picture.fileId],
    // In a group the caption may name the bot ("@zimage_bot make it blue"): the instruction is the rest.
    caption: message.caption?.replace(MENTION, " ").trim(),
    tooBig: picture.size !== undefined && picture.size > BOT_DOWNLOAD_LIMIT,
    mediaGroupId: message.media_group_id
  }
}

/** `@username` in a caption. */
const MENTION = /@([A-Za-z0-9_]{5,64})\b/g

/** The bot a photo's caption names, if any (how a group member speaks to the bot with a photo). */
const mentionedIn = (caption: string | undefined): string | undefined =>
  caption === undefined ? undefined : [...caption.matchAll(MENTION)][0]?.[1]

const fromMessage = (message: Message, from: User): Incoming => {
  const text = message.text
  const command = text === undefined ? undefined : parseCommand(text)
  const input = inputOf(message)
  return {
    chatId: message.chat.id,
    chatType: message.chat.type,
    from,
    input,
    threadId: topicOf(message),
    userMessageId: message.message_id,
    addressedTo: command?.bot ?? (input._tag === "Photo" ? mentionedIn(message.caption) : undefined),
    repliesTo: repliedOf(message)?.from
  }
}

/** The flow's view of `update`; `undefined` for a bot's message or an update that is neither message nor callback. */
export const incomingOf = (update: Update): Incoming | undefined => {
  const message = update.message
  if (message !== undefined) {
    const from = message.from
    if (from === undefined || from.is_bot) return undefined
    return fromMessage(message, from)
  }
  const query = update.callback_query
  if (query !== undefined) {
    const shownOn = query.message
    const answered = repliedOf(shownOn)
    return {
      // A button on an inline message has no chat: answer in the user's private chat.
      chatId: shownOn?.chat.id ?? query.from.id,
      chatType: shownOn?.chat.type ?? "private",
      from: query.from,
      input: {
        _tag: "Callback",
        queryId: query.id,
        data: parseCallbackData(query.data),
        messageId: shownOn?.message_id,
        pressedBy: query.from.id,
        shownTo: answered?.from?.is_bot === false ? answered.from.id : undefined
      },
      threadId: topicOf(shownOn),
      userMessageId: answered?.from?.is_bot === false ? answered.message_id : undefined,
      addressedTo: undefined,
      repliesTo: answered?.from
    }
  }
  return undefined
}
