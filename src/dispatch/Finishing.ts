/**
 * Finishing handled updates, group-committed: updates that finish at about
 * the same time (different chats, different workers) are marked `done` in one
 * statement, together with the states their handlers left (`FinishWrite`), in
 * one transaction.
 *
 * When to use: by `HandlerRun.ts` when a handler run succeeded; the caller
 * waits for its own update's commit, so a chat's next update starts only
 * after its previous one's state is stored (per-chat order holds as before).
 *
 * Details: `platform/GroupedCalls.ts` does the grouping (a finish that finds
 * no other in flight goes at once, alone). The transaction marks the updates
 * done where this term still owns them and writes only those updates'
 * states: a deposed leader's late finish writes nothing. Without any
 * `FinishWrite` in the group it is one autocommit statement.
 *
 * Gotchas: a failed group fails every finish in it (each is retried by the
 * caller's bookkeeping policy); a fault of one update's own data is retried
 * alone, so it never fails its neighbours.
 */
import { Effect, type Scope } from "effect"
import type { SqlError } from "effect/sql/SqlError"
import type { InboxShape } from "../inbox/Inbox.ts"
import { type GroupedCallsClosed, makeGroupedCalls } from "../platform/GroupedCalls.ts"
import type { FinishWrite, UpdateHandler } from "./UpdateHandler.ts"

/** Finishes shared by one statement at most (bounds its parameters). */
export const MAX_FINISHES_PER_STATEMENT = 256

/** One finished update and what its handler left to write. */
interface Finish {
  readonly updateId: number
  readonly write: FinishWrite | undefined
}

/** The group-committed finish of one term. */
export interface Finishing {
  /** Marks `updateId` done (with `write`, atomically); tells whether this term still owned it. */
  readonly finish: (
    updateId: number,
    write: FinishWrite | undefined
  ) => Effect.Effect<boolean, SqlError | GroupedCallsClosed>
}

/** What finishing needs. */
export interface FinishingOptions {
  readonly inbox: InboxShape
  /** This leadership term: only its rows are finished. */
  readonly term: string
  readonly handler: UpdateHandler["Service"]
}

/** Starts the grouping fiber in the current scope (keep it alive until the term's drain is over). */
export const makeFinishing = (options: FinishingOptions): Effect.Effect<Finishing, never, Scope.Scope> =>
  Effect.gen(function*() {
    const { handler, inbox, term } = options

    const finishAll = (finishes: ReadonlyArray<Finish>) => {
      const writes = finishes.flatMap((finish) => (finish.write === undefined ? [] : [finish.write]))
      const writeFinished = handler.writeFinished
      const alongside = writes.length === 0 || writeFinished === undefined
        ? undefined
        : (owned: ReadonlySet<number>) => writeFinished(writes.filter((write) => owned.has(write.updateId)))
      return inbox.completeWith(term, finishes.map((finish) => finish.updateId), alongside).pipe(
        Effect.map((owned) => finishes.map((finish) => owned.has(finish.updateId)))
      )
    }

    const grouped = yield* makeGroupedCalls({ run: finishAll, maxPerCall: MAX_FINISHES_PER_STATEMENT })
    return { finish: (updateId, write) => grouped({ updateId, write }) }
  })
