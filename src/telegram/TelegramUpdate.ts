/**
 * Telegram updates: the envelope every incoming update must have (webhook body
 * or getUpdates element), the routing facts stored beside it in the inbox, and
 * the typed `Update` the chat flow receives.
 *
 * The schemas are open: they check the fields the bot relies on and keep every
 * other field as it came, so a newer Bot API never breaks decoding and the
 * chat flow can still read what we did not model.
 */
import { Option, Schema } from "effect"

/** Any further fields, kept as they came. */
const rest = [Schema.Record(Schema.String, Schema.Unknown)] as const

const optional = Schema.optionalKey

/** An `update_id`: Telegram's ids are positive integers that increase. */
export const UpdateId = Schema.Int.check(Schema.isGreaterThanOrEqualTo(0))

/** The minimum an incoming update must have: a JSON object with an integer `update_id`. */
export const UpdateEnvelope = Schema.StructWithRest(Schema.Struct({ update_id: UpdateId }), rest)
export type UpdateEnvelope = typeof UpdateEnvelope.Type

export const User = Schema.StructWithRest(
  Schema.Struct({
    id: Schema.Int,
    is_bot: Schema.Boolean,
    first_name: Schema.String,
    last_name: optional(Schema.String),
    username: optional(Schema.String),
    language_code: optional(Schema.String)
  }),
  rest
)
export type User = typeof User.Type

export const Chat = Schema.StructWithRest(
  Schema.Struct({
    id: Schema.Int,
    type: Schema.String,
    title: optional(Schema.String),
    username: optional(Schema.String),
    first_name: optional(Schema.String),
    last_name: optional(Schema.String)
  }),
  rest
)
export type Chat = typeof Chat.Type

export const MessageEntity = Schema.StructWithRest(
  Schema.Struct({ type: Schema.String, offset: Schema.Int, length: Schema.Int }),
  rest
)

/**
 * A message. Also fits the `InaccessibleMessage` a callback query may carry
 * (Telegram then sends only `chat`, `message_id` and `date: 0`).
 */
export const Message = Schema.StructWithRest(
  Schema.Struct({
    message_id: Schema.Int,
    date: Schema.Int,
    chat: Chat,
    from: optional(User),
    message_thread_id: optional(Schema.Int),
    text: optional(Schema.String),
    caption: optional(Schema.String),
    entities: optional(Schema.Array(MessageEntity))
  }),
  rest
)
export type Message = typeof Message.Type

export const CallbackQuery = Schema.StructWithRest(
  Schema.Struct({
    id: Schema.String,
    from: User,
    message: optional(Message),
    inline_message_id: optional(Schema.String),
    chat_instance: Schema.String,
    data: optional(Schema.String)
  }),
  rest
)
export type CallbackQuery = typeof CallbackQuery.Type

/**
 * An update as the chat flow sees it. The bot subscribes to `message` and
 * `callback_query` only (`allowedUpdates`); any other kind still decodes, with
 * its fields kept untyped.
 */
export const Update = Schema.StructWithRest(
  Schema.Struct({
    update_id: UpdateId,
    message: optional(Message),
    callback_query: optional(CallbackQuery)
  }),
  rest
)
export type Update = typeof Update.Type

/** The update kinds the bot asks Telegram for (setWebhook / getUpdates `allowed_updates`). */
export const allowedUpdates = ["message", "callback_query"] as const

/** Whether the chat flow has anything to do with this update. */
export const isHandledKind = (update: Update): boolean =>
  update.message !== undefined || update.callback_query !== undefined

// ---------------------------------------------------------------------------
// Routing facts, read leniently from any kind of update when it is stored.

const HasId = Schema.Struct({ id: Schema.Int })
const Carrier = Schema.Struct({
  chat: optional(HasId),
  from: optional(HasId),
  user: optional(HasId),
  message: optional(Schema.Struct({ chat: optional(HasId) }))
})
const decodeCarrier = Schema.decodeUnknownOption(Carrier)

export interface Routing {
  /** The first field beside `update_id`, e.g. `message`; `unknown` if there is none. */
  readonly kind: string
  /**
   * The chat the update belongs to. For updates without a chat (a callback
   * from an inline message) the sender's private chat, whose id is the user id.
   * `null` when the update names neither.
   */
  readonly chatId: number | null
  readonly userId: number | null
}

/** Reads kind, chat and sender from an update of any kind, never failing. */
export const routingOf = (update: UpdateEnvelope): Routing => {
  const kind = Object.keys(update).find((key) => key !== "update_id") ?? "unknown"
  const carrier = decodeCarrier(update[kind])
  const userId = Option.match(carrier, {
    onNone: () => null,
    onSome: (c) => c.from?.id ?? c.user?.id ?? null
  })
  const chatId = Option.match(carrier, {
    onNone: () => null,
    onSome: (c) => c.chat?.id ?? c.message?.chat?.id ?? null
  })
  return { kind, chatId: chatId ?? userId, userId }
}
