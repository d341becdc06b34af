/**
 * The allowlist of a private bot (ALLOWED_USER_IDS): users not on it get one
 * short "this bot is private" answer per message or button press and nothing
 * else; no session is read or written for them, no generation recorded.
 *
 * Cheap by design: a set lookup before the flow touches the database. In a
 * group the bot stays quiet for an outsider's plain messages (it would answer
 * everyone's chatter otherwise) and answers only their commands and buttons;
 * a button press is always answered, so their Telegram client stops spinning.
 */
import { Effect, Metric, Option } from "effect"
import { accessRefused } from "../observability/Metrics.ts"
import { langOf, t } from "../texts/Messages.ts"
import type { UpdateHandlerError } from "../dispatch/UpdateHandler.ts"
import type { Incoming } from "./ChatIncoming.ts"
import type { ChatReplies, ChatUnreachable } from "./ChatReplies.ts"

/** Who may use the bot. */
export interface Access {
  /**
   * True when the sender is not allowed: they have been answered, and the
   * flow must leave the update alone.
   */
  readonly refused: (incoming: Incoming) => Effect.Effect<boolean, ChatUnreachable | UpdateHandlerError>
}

/** `allowed`: the user ids the bot serves; `None` serves everyone. */
export const makeAccess = (allowed: Option.Option<ReadonlySet<number>>, replies: ChatReplies): Access => ({
  refused: (incoming) => {
    if (Option.isNone(allowed) || allowed.value.has(incoming.from.id)) return Effect.succeed(false)
    const text = t(langOf(incoming.from.language_code)).privateBot
    const input = incoming.input
    const answer = input._tag === "Callback"
      ? replies.answer(input.queryId, text)
      : incoming.chatType === "private" || input._tag === "Command"
      ? replies.send(incoming, text)
      : Effect.void
    // Counted once answered: an update retried after a failed send is not counted twice.
    return Effect.as(Effect.andThen(answer, Metric.update(accessRefused, 1)), true)
  }
})
