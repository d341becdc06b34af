/**
 * What this leadership term holds in memory: the updates it claimed and has
 * not finished, each in its state, and whether the term is draining.
 *
 * When to use: shared by the dispatcher's parts; claiming asks it for room,
 * a handler run moves an update through its states, the drain waits on it.
 *
 * Details: an update is `queued` (waiting behind its chat's earlier ones or
 * for its worker), `running` (a handler run holds the worker), or `backoff`
 * (waiting out a retry delay); `finish` forgets it. When claiming found no
 * room, the first `finish` after calls `onRoom` so claiming resumes.
 *
 * Gotchas: plain mutable state, touched only from fibers of one term; no
 * effect runs while it changes, so no lock is needed.
 */
import type { FloodVerdict } from "./FloodWatch.ts"
import { Deferred, type Duration, Effect, Exit, Option } from "effect"
import type { ClaimedUpdate } from "../inbox/Inbox.ts"
import type { Update } from "../telegram/TelegramUpdate.ts"

/** Where a claimed update is in memory (the row stays `processing` meanwhile). */
export type ItemState = "queued" | "running" | "backoff"

/** A claimed, decoded update on its way through the dispatcher. */
export interface Item {
  readonly claimed: ClaimedUpdate
  readonly update: Update
  /** Its chat's id, or `update:<id>` for an update without a chat (in no order with any other). */
  readonly chatKey: string
  /** The worker its chat belongs to. */
  readonly worker: number
  state: ItemState
  /** Whether a handler run started for it in this term (its claim's attempt was used). */
  started: boolean
  /** Clock time of the claim, for `zimage_update_processing_seconds`. */
  readonly claimedAtMillis: number
  /** Part of a flood (`FloodWatch.ts`)? Absent: answer as usual. */
  readonly flood?: FloodVerdict
}

/** This term's claimed updates in memory; see the module doc. */
export interface InFlight {
  /** Updates held (claimed, not finished). */
  readonly size: () => number
  /** Handler runs going on now. */
  readonly running: () => number
  readonly add: (item: Item) => void
  readonly setState: (item: Item, state: ItemState) => void
  /** Forgets a finished (or handed back) update. */
  readonly finish: (item: Item) => void
  /** Claiming found no room: the next `finish` calls `onRoom`. */
  readonly markSaturated: () => void
  readonly isDraining: () => boolean
  /** No handler run starts from now on. */
  readonly startDraining: () => void
  /** Waits until no handler runs, at most `timeout`; tells whether it got there. */
  readonly awaitIdle: (timeout: Duration.Input) => Effect.Effect<boolean>
  /** The updates held whose claim's attempt a handler run used. */
  readonly startedIds: () => ReadonlyArray<number>
}

/** An empty `InFlight`; `onRoom` is called when room opens after claiming found none. */
export const makeInFlight = (onRoom: () => void): InFlight => {
  const items = new Map<number, Item>()
  let draining = false
  let saturated = false
  let runningCount = 0
  let idle: Deferred.Deferred<void> | undefined

  const noteIdle = () => {
    if (runningCount === 0 && idle !== undefined) Deferred.doneUnsafe(idle, Exit.void)
  }

  return {
    size: () => items.size,
    running: () => runningCount,
    add: (item) => {
      items.set(item.claimed.updateId, item)
    },
    setState: (item, state) => {
      if (item.state === "running") runningCount--
      if (state === "running") runningCount++
      item.state = state
      noteIdle()
    },
    finish: (item) => {
      if (item.state === "running") runningCount--
      items.delete(item.claimed.updateId)
      noteIdle()
      if (saturated) {
        saturated = false
        onRoom()
      }
    },
    markSaturated: () => {
      saturated = true
    },
    isDraining: () => draining,
    startDraining: () => {
      draining = true
    },
    awaitIdle: (timeout) =>
      Effect.gen(function*() {
        if (runningCount === 0) return true
        const done = yield* Deferred.make<void>()
        idle = done
        const finished = yield* Deferred.await(done).pipe(Effect.timeoutOption(timeout))
        return Option.isSome(finished)
      }),
    startedIds: () => [...items.values()].filter((item) => item.started).map((item) => item.claimed.updateId)
  }
}
