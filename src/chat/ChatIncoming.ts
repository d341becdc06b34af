/**
 * What an update means to the chat flow: the chat, the sender and the
 * `ChatInput` (a command, text, something else, or a button press), or
 * nothing when the update is none of the flow's business.
 */
import { Predicate } from "effect"
import type { Update, User } from "../dispatch/UpdateHandler.ts"
import type { ChatInput } from "./ChatFlowLogic.ts"
import { parseCallbackData } from "../texts/Messages.ts"

/** What one update means to the flow. */
export interface Incoming {
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

/** The flow's view of `update`; `undefined` for a bot's message or an update that is neither message nor callback. */
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
