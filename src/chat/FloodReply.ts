/**
 * The chat flow's side of a flood (see `dispatch/FloodWatch.ts`): the one
 * update that gets the notice answers "too many messages, wait a moment" in
 * the user's language; the rest of the flood gets nothing. A button press is
 * still answered (with no text when quiet), so the user's client stops
 * spinning.
 *
 * The session is neither read nor written: a flood leaves the conversation
 * where it was, and the user goes on from there once it passes.
 */
import { Effect } from "effect"
import type { FloodVerdict, UpdateHandlerError } from "../dispatch/UpdateHandler.ts"
import { langOf, t } from "../texts/Messages.ts"
import type { Incoming } from "./ChatIncoming.ts"
import type { ChatReplies, ChatUnreachable } from "./ChatReplies.ts"

/** Answers an update that is part of a flood (`notice` or `quiet`). */
export const floodReply = (
  incoming: Incoming,
  verdict: Exclude<FloodVerdict, "answer">,
  replies: ChatReplies
): Effect.Effect<void, ChatUnreachable | UpdateHandlerError> => {
  const text = verdict === "notice" ? t(langOf(incoming.from.language_code)).tooManyMessages : undefined
  const input = incoming.input
  if (input._tag === "Callback") return replies.answer(input.queryId, text)
  return text === undefined ? Effect.void : Effect.asVoid(replies.send(incoming, text))
}
