/**
 * Per-chat routing onto workers: chat `c` belongs to worker
 * `hash(c) mod WORKERS`; a worker runs one handler at a time.
 *
 * Details: each chat with work has a small fiber that runs its updates
 * strictly one after another in `update_id` order and takes its worker's
 * permit only while a handler runs, so a chat waiting out a retry backoff
 * holds back nobody but itself. Different chats run in parallel, up to one
 * per worker.
 *
 * A claim takes at most `CLAIMS_PER_CHAT` updates of a chat at once; a chat
 * whose fiber was given that many may have more waiting in the inbox, so
 * when its queue runs empty the claim loop is woken (`onCapDrained`) to
 * fetch them.
 *
 * Gotchas: the fiber of a chat ends when its queue is empty; the next update
 * of that chat starts a new one. The hash must stay the same on every
 * instance and across releases.
 */
import { Effect, FiberSet, Semaphore } from "effect"
import { CLAIMS_PER_CHAT } from "../inbox/Inbox.ts"
import type { InFlight, Item } from "./InFlight.ts"

/** A stable worker index for a chat: FNV-1a over its decimal id, identical on every instance. */
export const workerFor = (key: string, workers: number): number => {
  let hash = 0x811c9dc5
  for (let i = 0; i < key.length; i++) {
    hash ^= key.charCodeAt(i)
    hash = Math.imul(hash, 0x01000193)
  }
  return (hash >>> 0) % workers
}

/** What routing needs. */
export interface ChatRoutingOptions {
  readonly workers: number
  readonly inFlight: InFlight
  /** Runs one update to its end, taking `worker` for each handler run. */
  readonly run: (item: Item, worker: Semaphore.Semaphore) => Effect.Effect<void>
  /** Where the chats' fibers run (cleared when the term ends). */
  readonly fibers: FiberSet.FiberSet
  /** A chat whose fiber was given `CLAIMS_PER_CHAT` updates ran out of them: claim again. */
  readonly onCapDrained: () => void
}

/** Routes claimed updates to their chats' fibers. */
export interface ChatRouting {
  /** Queues `item` behind its chat's earlier updates, starting the chat's fiber if it has none. */
  readonly route: (item: Item) => Effect.Effect<void>
}

/** Makes the workers (one permit each) and the chats' queues. */
export const makeChatRouting = (options: ChatRoutingOptions): Effect.Effect<ChatRouting> =>
  Effect.gen(function*() {
    const { inFlight } = options
    const permits = yield* Effect.forEach(Array.from({ length: options.workers }), () => Semaphore.make(1))
    const chats = new Map<string, Array<Item>>()
    // Updates routed to each chat since its fiber started. A claim leaves a chat's rows behind only
    // when the chat then holds CLAIMS_PER_CHAT, all routed to its current fiber; counting routes
    // (not the queue's length, which shrinks meanwhile) makes sure its end wakes the claim loop.
    const routedToFiber = new Map<string, number>()

    /** The fiber of one chat: its queued updates, strictly one after another. */
    const runChat = (key: string): Effect.Effect<void> =>
      Effect.gen(function*() {
        for (;;) {
          const queue = chats.get(key)
          const item = queue?.[0]
          if (queue === undefined || item === undefined) {
            chats.delete(key)
            if ((routedToFiber.get(key) ?? 0) >= CLAIMS_PER_CHAT) options.onCapDrained()
            routedToFiber.delete(key)
            return
          }
          yield* options.run(item, permits[item.worker]!)
          queue.shift()
          inFlight.finish(item)
        }
      })

    const route = (item: Item) =>
      Effect.gen(function*() {
        inFlight.add(item)
        routedToFiber.set(item.chatKey, (routedToFiber.get(item.chatKey) ?? 0) + 1)
        const queue = chats.get(item.chatKey)
        if (queue !== undefined) {
          queue.push(item)
          return
        }
        chats.set(item.chatKey, [item])
        yield* FiberSet.run(options.fibers, runChat(item.chatKey))
      })

    return { route }
  })
