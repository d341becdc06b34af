/**
 * Finishing handled updates, group-committed: updates that finish at about
 * the same time (different chats, different workers) are marked `done` in one
 * statement, together with the states their handlers left (`FinishWrite`) and
 * the blocked flags their chats no longer deserve, in one transaction.
 *
 * When to use: by `HandlerRun.ts` when a handler run succeeded; the caller
 * waits for its own update's commit, so a chat's next update starts only
 * after its previous one's state is stored (per-chat order holds as before).
 *
 * Details: `platform/GroupedCalls.ts` does the grouping (a finish that finds
 * no other in flight goes at once, alone). The transaction marks the updates
 * done where this term still owns them and writes only those updates'
 * states: a deposed leader's late finish writes nothing. An update from a
 * chat proves the bot can write there again, so the chat's blocked flag is
 * cleared, if it was set before the update arrived (a 403 while handling it
 * keeps the flag): `Telegram.unblockArrived`. Updates from no chat and
 * without a `FinishWrite` are one autocommit statement.
 *
 * Gotchas: a failed group fails every finish in it (each is retried by the
 * caller's bookkeeping policy); a fault of one update's own data is retried
 * alone, so it never fails its neighbours.
 */
import { type Duration, Effect, Option, type Scope } from "effect"
import type { SqlError } from "effect/sql/SqlError"
import type { InboxShape } from "../inbox/Inbox.ts"
import type { Telegram } from "../telegram/Telegram.ts"
import { type GroupedCallsClosed, makeGroupedCalls } from "../platform/GroupedCalls.ts"
import type { FinishWrite, UpdateHandler } from "./UpdateHandler.ts"

/** Per-update spans skip the stack trace capture (measurable CPU on every update). */
const NO_STACK = { captureStackTrace: false } as const

/** Finishes shared by one statement at most (bounds its parameters). */
export const MAX_FINISHES_PER_STATEMENT = 256

/** A handled update, as finishing needs it. */
export interface Finished {
  readonly updateId: number
  /** The chat it came from, if any. */
  readonly chatId: number | null
  /** When it arrived (stored); its chat's blocked flag is cleared if older. */
  readonly arrivedAtMillis: number
}

/** One finished update and what its handler left to write. */
interface Finish {
  readonly update: Finished
  readonly write: FinishWrite | undefined
}

/** The group-committed finish of one term. */
export interface Finishing {
  /** Marks `update` done (with `write`, atomically); tells whether this term still owned it. */
  readonly finish: (
    update: Finished,
    write: FinishWrite | undefined
  ) => Effect.Effect<boolean, SqlError | GroupedCallsClosed>
  /**
   * Waits, at most `timeout`, until every finish asked for so far has
   * committed or failed, including those whose callers were interrupted;
   * tells whether it got there.
   */
  readonly settle: (timeout: Duration.Duration) => Effect.Effect<boolean>
}

/** What finishing needs. */
export interface FinishingOptions {
  readonly inbox: InboxShape
  /** This leadership term: only its rows are finished. */
  readonly term: string
  readonly handler: UpdateHandler["Service"]
  readonly telegram: Telegram["Service"]
}

/** Starts the grouping fiber in the current scope (keep it alive until the term's drain is over). */
export const makeFinishing = (options: FinishingOptions): Effect.Effect<Finishing, never, Scope.Scope> =>
  Effect.gen(function*() {
    const { handler, inbox, telegram, term } = options

    /** What is written beside the finish of the updates this term still owns. */
    const alongsideOf = (finishes: ReadonlyArray<Finish>) => {
      const writes = finishes.flatMap((finish) => (finish.write === undefined ? [] : [finish.write]))
      const writeFinished = handler.writeFinished
      const fromChats = finishes.filter((finish) => finish.update.chatId !== null)
      if ((writes.length === 0 || writeFinished === undefined) && fromChats.length === 0) return undefined
      return (owned: ReadonlySet<number>) =>
        Effect.gen(function*() {
          const ownedWrites = writes.filter((write) => owned.has(write.updateId))
          if (writeFinished !== undefined && ownedWrites.length > 0) yield* writeFinished(ownedWrites)
          const arrivals = fromChats.flatMap(({ update }) =>
            owned.has(update.updateId) && update.chatId !== null
              ? [{ chatId: update.chatId, arrivedAt: new Date(update.arrivedAtMillis) }]
              : []
          )
          if (arrivals.length > 0) yield* telegram.unblockArrived(arrivals)
        })
    }

    const finishAll = (finishes: ReadonlyArray<Finish>) =>
      inbox.completeWith(term, finishes.map((finish) => finish.update.updateId), alongsideOf(finishes)).pipe(
        Effect.map((owned) => finishes.map((finish) => owned.has(finish.update.updateId)))
      )

    const grouped = yield* makeGroupedCalls({ run: finishAll, maxPerCall: MAX_FINISHES_PER_STATEMENT })
    return {
      // The span (named as before the grouping) is the update's wait for its shared finish.
      finish: (update, write) =>
        grouped({ update, write }).pipe(Effect.withSpan("Inbox.complete", undefined, NO_STACK)),
      settle: (timeout) => grouped.awaitIdle.pipe(Effect.timeoutOption(timeout), Effect.map(Option.isSome))
    }
  })
