/**
 * The plug-in point of the chat flow: the dispatcher hands every `message` and
 * `callback_query` update to `UpdateHandler.handle`, one chat at a time in
 * `update_id` order.
 *
 * Handlers must be idempotent per `updateId`: an update is delivered at least
 * once. After a crash, a deploy or a lost leadership an update may be handled
 * again (its earlier run may have sent messages or not); `attempt` (1-based,
 * counted across restarts) tells a retry from a first run. Failing with
 * `UpdateHandlerError` (or dying, or running past UPDATE_HANDLER_TIMEOUT_MS)
 * retries the update with backoff up to UPDATE_MAX_ATTEMPTS runs; then it is
 * marked dead with the error and the chat's later updates go on. A run
 * that must wait for Telegram's flood limits (`waitMillis`) is rescheduled
 * instead: not a failure, no worker held meanwhile.
 *
 * A run may end with a `FinishWrite`: what it wants written when its update
 * is marked `done` (the chat's new state). The dispatcher writes it with
 * `writeFinished` in the transaction that marks the update done, shared with
 * other updates finishing at the same time, and only if this term still owns
 * the update: the state and the finish commit together or not at all, and a
 * deposed leader writes neither.
 */
import { Context, type Effect, Schema } from "effect"
import type { SqlError } from "effect/sql/SqlError"
import type { Update } from "../telegram/TelegramUpdate.ts"
import type { FloodVerdict } from "./FloodWatch.ts"

export type { CallbackQuery, Chat, Message, Update, User } from "../telegram/TelegramUpdate.ts"
export type { FloodVerdict } from "./FloodWatch.ts"

/**
 * A run that did not finish. Without `waitMillis` it failed: the update is
 * retried, or dead once its runs are used up. With `waitMillis` Telegram
 * asked us to wait (flood limits) longer than a handler may: the update runs
 * again after that long, and the run does not count as a failure.
 */
export class UpdateHandlerError extends Schema.TaggedError<UpdateHandlerError>()("UpdateHandlerError", {
  message: Schema.String,
  waitMillis: Schema.optionalKey(Schema.Number)
}) {}

/** Which update a run is for, and which run it is. */
export interface UpdateContext {
  readonly updateId: number
  /**
   * 1 for the first run. Higher after a failed run, or when a leader was lost
   * while it held the update (whether or not it had started the handler).
   */
  readonly attempt: number
  /**
   * Part of a flood from this user (`FloodWatch.ts`): `notice` wants one
   * short "too many messages" answer instead of the usual one, `quiet` none.
   * Absent or `answer`: handle as usual.
   */
  readonly flood?: FloodVerdict
}

/**
 * A write a successful run leaves for its update's finish (see the module
 * doc). The handler extends it with what it needs; the dispatcher only reads
 * `updateId` and hands the write back to the same handler's `writeFinished`.
 */
export interface FinishWrite {
  readonly updateId: number
}

/** The chat flow as the dispatcher sees it (see the module doc). */
export class UpdateHandler extends Context.Service<UpdateHandler, {
  /** Handles one update; may return what to write when it is marked done. */
  readonly handle: (update: Update, context: UpdateContext) => Effect.Effect<void | FinishWrite, UpdateHandlerError>
  /**
   * Writes the `FinishWrite`s of updates this term still owns, inside the
   * transaction that marks them done (one call for all of them). Needed only
   * by a handler that returns `FinishWrite`s.
   */
  readonly writeFinished?: (writes: ReadonlyArray<FinishWrite>) => Effect.Effect<void, SqlError>
}>()("zimage-bot/UpdateHandler") {}
