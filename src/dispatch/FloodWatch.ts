/**
 * The dispatcher's flood watch: many messages from one user in a chat in a
 * short time get one short answer, not one reply each.
 *
 * When to use: claiming asks it about every claimed update, in `update_id`
 * order, and hands the verdict to the handler with the update.
 *
 * Details: per (chat, user), the updates received within the last window
 * of `FLOOD_NOTICE_RATE` (by their `received_at`) are counted. Up to its
 * count, each is `answer`ed as usual; the next one gets the `notice` ("too
 * many messages, wait a moment"), the rest of the flood stays `quiet`. Once
 * a whole window passes without an update from that user, the next one
 * starts afresh, so commands and buttons work again as soon as the flood
 * stops.
 *
 * Gotchas: in memory, per leadership term; a new leader starts with no
 * history (at worst a flood in progress gets one more notice). The intake's
 * flood gate (`inbox/FloodGate.ts`) already keeps what reaches this short.
 */
import { Duration } from "effect"
import type { RateBudget } from "../platform/AppConfig.ts"
import { forgetDown } from "../platform/BoundedMap.ts"

/** What the handler does with an update: answer it, answer with the flood notice, or stay quiet. */
export type FloodVerdict = "answer" | "notice" | "quiet"

/**
 * Above this many tracked (chat, user) pairs, quiet ones (then the oldest) are
 * forgotten. A pair costs about 350 bytes of heap (its key, times and map
 * entry), so this bounds the watch near 3.5 MiB; a sender is quiet after one
 * window (10 s by default), so only more than 1,000 new senders a second
 * for a whole window reach it, and then the oldest get a fresh start.
 */
export const MAX_TRACKED_SENDERS = 10_000

interface Sender {
  /** Receive times within the window, oldest first; at most `count + 1` kept. */
  times: Array<number>
  noticed: boolean
}

/** The watch of one term. */
export interface FloodWatch {
  /** The verdict for an update from `sender` (a chat and user key) received at `receivedAt` (ms). */
  readonly verdict: (sender: string, receivedAt: number) => FloodVerdict
  /** Senders tracked right now. */
  readonly tracked: () => number
}

/** Makes a watch allowing `rate.count` updates per sender within `rate.window`. */
export const makeFloodWatch = (rate: RateBudget): FloodWatch => {
  const windowMillis = Duration.toMillis(rate.window)
  const senders = new Map<string, Sender>()

  const forgetQuiet = (now: number) =>
    forgetDown(senders, MAX_TRACKED_SENDERS, (sender) => (sender.times.at(-1) ?? 0) <= now - windowMillis)

  const verdict = (key: string, receivedAt: number): FloodVerdict => {
    let sender = senders.get(key)
    if (sender === undefined) {
      if (senders.size >= MAX_TRACKED_SENDERS) forgetQuiet(receivedAt)
      sender = { times: [], noticed: false }
      senders.set(key, sender)
    }
    sender.times = sender.times.filter((at) => at > receivedAt - windowMillis)
    if (sender.times.length === 0) sender.noticed = false
    sender.times.push(receivedAt)
    if (sender.times.length > rate.count + 1) sender.times.shift()
    if (sender.times.length <= rate.count) return "answer"
    if (sender.noticed) return "quiet"
    sender.noticed = true
    return "notice"
  }

  return { verdict, tracked: () => senders.size }
}
