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

/** An object with these fields checked and any further fields kept as they came. */
const open = <const Fields extends Schema.Struct.Fields>(fields: Fields) =>
  Schema.StructWithRest(Schema.Struct(fields), rest)

const optional = Schema.optionalKey

/** An `update_id`: Telegram's ids are positive integers that increase. */
export const UpdateId = Schema.Int.check(Schema.isGreaterThanOrEqualTo(0))

/** The minimum an incoming update must have: a JSON object with an integer `update_id`. */
export const UpdateEnvelope = open({ update_id: UpdateId })
export type UpdateEnvelope = typeof UpdateEnvelope.Type

/** The optional name fields a user and a chat (the private chat with that user) both have. */
const names = { last_name: optional(Schema.String), username: optional(Schema.String) }

/** A Telegram user (the sender of a message or of a callback). */
export const User = open({
  id: Schema.Int,
  is_bot: Schema.Boolean,
  first_name: Schema.String,
  ...names,
  language_code: optional(Schema.String)
})
export type User = typeof User.Type

/** A chat: private (with `first_name`), group, supergroup or channel (with `title`). */
export const Chat = open({
  id: Schema.Int,
  type: Schema.String,
  title: optional(Schema.String),
  first_name: optional(Schema.String),
  ...names
})
export type Chat = typeof Chat.Type

/** A formatting entity of a message's text (a command, a link...). */
export const MessageEntity = open({ type: Schema.String, offset: Schema.Int, length: Schema.Int })

/** One size of a photo: `message.photo` lists them smallest first. */
export const PhotoSize = open({
  file_id: Schema.String,
  width: Schema.Int,
  height: Schema.Int,
  file_size: optional(Schema.Int)
})
export type PhotoSize = typeof PhotoSize.Type

/** A file sent as a document (a photo "as a file" comes this way, with an image MIME type). */
export const Document = open({
  file_id: Schema.String,
  file_name: optional(Schema.String),
  mime_type: optional(Schema.String),
  file_size: optional(Schema.Int)
})
export type Document = typeof Document.Type

/**
 * The message a message replies to, as far as the bot needs it: whose it is,
 * and the picture it carries (a reply to the bot's picture edits it).
 * Telegram sends it one level deep (its own `reply_to_message` is left out).
 *
 * Gotcha: in a forum topic, a message that replies to nothing still carries
 * one: the topic's "topic created" service message (`forum_topic_created`),
 * from whoever opened the topic.
 */
export const RepliedMessage = open({
  message_id: Schema.Int,
  from: optional(User),
  forum_topic_created: optional(Schema.Unknown),
  photo: optional(Schema.Array(PhotoSize)),
  document: optional(Document)
})
export type RepliedMessage = typeof RepliedMessage.Type

/**
 * A message. Also fits the `InaccessibleMessage` a callback query may carry
 * (Telegram then sends only `chat`, `message_id` and `date: 0`).
 */
export const Message = open({
  message_id: Schema.Int,
  date: Schema.Int,
  chat: Chat,
  from: optional(User),
  message_thread_id: optional(Schema.Int),
  /** True for a message in a forum topic: answers go to that topic (`message_thread_id`). */
  is_topic_message: optional(Schema.Boolean),
  reply_to_message: optional(RepliedMessage),
  text: optional(Schema.String),
  caption: optional(Schema.String),
  entities: optional(Schema.Array(MessageEntity)),
  photo: optional(Schema.Array(PhotoSize)),
  document: optional(Document),
  /** Set on each message of an album (photos sent together). */
  media_group_id: optional(Schema.String)
})
export type Message = typeof Message.Type

/** A press of an inline keyboard button. */
export const CallbackQuery = open({
  id: Schema.String,
  from: User,
  message: optional(Message),
  inline_message_id: optional(Schema.String),
  chat_instance: Schema.String,
  data: optional(Schema.String)
})
export type CallbackQuery = typeof CallbackQuery.Type

/**
 * An update as the chat flow sees it. The bot subscribes to `message` and
 * `callback_query` only (`allowedUpdates`); any other kind still decodes, with
 * its fields kept untyped.
 */
export const Update = open({
  update_id: UpdateId,
  message: optional(Message),
  callback_query: optional(CallbackQuery)
})
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

/** Where an update of any kind belongs: what the inbox stores beside it. */
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
