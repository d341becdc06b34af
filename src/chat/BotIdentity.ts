/**
 * Who the bot is (getMe), for the chat flow in groups: whether a command
 * `/start@name` is ours, and whether a text replies to one of our messages.
 *
 * Asked for the first time a group needs it, not at startup, so a slow or
 * failing getMe never holds up the service and private chats never wait for
 * it. A success is kept for the process's life (a bot's id and username do
 * not change while it runs); a failure is not, so the next update asks again.
 */
import { Effect } from "effect"
import type { TelegramShape } from "../telegram/Telegram.ts"
import type { UpdateHandlerError } from "../dispatch/UpdateHandler.ts"
import { type ChatUnreachable, orRetry } from "./ChatReplies.ts"

/** The bot's own id and username. */
export interface BotIdentity {
  readonly id: number
  readonly username: string
}

/** Whether `name` (from `/cmd@name`) is this bot; Telegram usernames ignore case. */
export const isOurName = (me: BotIdentity, name: string): boolean => me.username.toLowerCase() === name.toLowerCase()

/** The bot's identity, asked of Telegram once and remembered; a failure retries the update. */
export const makeBotIdentity = (
  telegram: TelegramShape
): Effect.Effect<BotIdentity, ChatUnreachable | UpdateHandlerError> => {
  let known: BotIdentity | undefined
  const ask = orRetry("getMe", telegram.getMe).pipe(
    Effect.map((me): BotIdentity => ({ id: me.id, username: me.username })),
    Effect.tap((me) =>
      Effect.sync(() => {
        known = me
      })
    )
  )
  return Effect.suspend(() => (known === undefined ? ask : Effect.succeed(known)))
}
