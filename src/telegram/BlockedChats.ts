/**
 * Chats that cannot be written to (the user blocked the bot, was deleted, or
 * the bot left), kept in the `telegram_chats` table so every instance skips
 * them without a request to Telegram.
 *
 * When to use: the Telegram client records a chat here when a call to it
 * answered 403 (or 400 "chat not found") and asks before each call with a
 * `chat_id` (not before a reply to the chat whose update is being handled);
 * the dispatcher clears the flag when it finishes an update from the chat
 * (`unblockArrived`, in its finishing transaction).
 *
 * Gotchas: none of these fail but `unblockArrived`, which runs inside the
 * caller's transaction (a swallowed error there would turn its COMMIT into a
 * silent ROLLBACK). A database problem reads as "not blocked" (the call is
 * then simply made) and is otherwise only logged: the bookkeeping of blocked
 * chats must never stand between the bot and a reply.
 */
import { DateTime, Effect } from "effect"
import { SqlClient } from "effect/sql/SqlClient"
import type { SqlError } from "effect/sql/SqlError"
import { block } from "./sql/block.ts"
import { isBlocked } from "./sql/isBlocked.ts"
import { type Arrival, unblock, unblockArrived } from "./sql/unblock.ts"

export type { Arrival } from "./sql/unblock.ts"

/** The blocked-chat bookkeeping the Telegram client uses. */
export interface BlockedChats {
  /** Whether sends to this chat are short-circuited. A database failure reads as "not blocked". */
  readonly isBlocked: (chatId: number) => Effect.Effect<boolean>
  /** Records the chat as blocked, with Telegram's description why. Never fails (logged). */
  readonly markBlocked: (chatId: number, description: string) => Effect.Effect<void>
  /** Clears the blocked flag of these chats (duplicates and unsafe ids ignored). Never fails (logged). */
  readonly markUnblocked: (chatIds: number | ReadonlyArray<number>) => Effect.Effect<void>
  /**
   * Clears the blocked flag of chats updates arrived from, where the flag is
   * older than the update (a 403 met while handling it keeps its flag). One
   * statement for all; fails with the database's error, for use inside a
   * transaction.
   */
  readonly unblockArrived: (arrivals: ReadonlyArray<Arrival>) => Effect.Effect<void, SqlError>
}

/** The bookkeeping on the `telegram_chats` table (migration 0002). */
export const make: Effect.Effect<BlockedChats, never, SqlClient> = Effect.gen(function*() {
  const sql = yield* SqlClient
  const now = Effect.map(DateTime.now, DateTime.toDateUtc)

  const isChatBlocked = (chatId: number): Effect.Effect<boolean> =>
    isBlocked(sql, chatId).pipe(
      Effect.timeout("2 seconds"),
      Effect.catchCause(() => Effect.succeed(false))
    )

  const markBlocked = (chatId: number, description: string): Effect.Effect<void> =>
    Effect.gen(function*() {
      yield* block(sql, chatId, description, yield* now)
      yield* Effect.logWarning(`[TELEGRAM] chat ${chatId} marked blocked: ${description}`)
    }).pipe(
      Effect.timeout("5 seconds"),
      Effect.catchCause(() => Effect.logWarning(`[TELEGRAM] could not record chat ${chatId} as blocked`))
    )

  const markUnblocked = (chatIds: number | ReadonlyArray<number>): Effect.Effect<void> => {
    const ids = (typeof chatIds === "number" ? [chatIds] : [...new Set(chatIds)]).filter(Number.isSafeInteger)
    if (ids.length === 0) return Effect.void
    return Effect.gen(function*() {
      const cleared = yield* unblock(sql, ids, yield* now)
      for (const chatId of cleared) {
        yield* Effect.logInfo(`[TELEGRAM] chat ${chatId} unblocked (an update arrived from it)`)
      }
    }).pipe(
      Effect.timeout("5 seconds"),
      Effect.catchCause(() => Effect.logWarning(`[TELEGRAM] could not clear the blocked flag of ${ids.length} chat(s)`))
    )
  }

  const unblockArrivedChats = (arrivals: ReadonlyArray<Arrival>): Effect.Effect<void, SqlError> => {
    const valid = arrivals.filter((arrival) => Number.isSafeInteger(arrival.chatId))
    if (valid.length === 0) return Effect.void
    return Effect.gen(function*() {
      const cleared = yield* unblockArrived(sql, valid, yield* now)
      for (const chatId of cleared) {
        yield* Effect.logInfo(`[TELEGRAM] chat ${chatId} unblocked (an update arrived from it)`)
      }
    })
  }

  return { isBlocked: isChatBlocked, markBlocked, markUnblocked, unblockArrived: unblockArrivedChats }
})
