/**
 * When the bot may next write to a chat: Telegram's flood limits as a gate
 * that every Bot API call passes before it is sent.
 *
 * When to use: `BotApiCall` asks the gate before each request and tells it
 * about each 429; nothing else should.
 *
 * Details:
 * - **Pacing**, so that Telegram rarely has to say 429 at all: each chat has a
 *   token bucket, a private chat a burst of `PRIVATE_BURST` and then one
 *   message a second, a group (negative chat id) a burst of `GROUP_BURST` and
 *   then 20 a minute. Messages the bot sends on its own (not while handling
 *   an update: deliveries, status edits, failure notices) also take from one
 *   bucket of `OWN_PER_SECOND` a second for all chats, Telegram's figure for
 *   bulk sending; replies to users do not, so a burst of `/start`s is never
 *   slowed down by it.
 * - **429**: on a call to a chat it pauses that chat only, for `retry_after`,
 *   and the chat gets no new burst after it (one message, then one a second).
 *   A 429 on a call to no chat (getMe, answerCallbackQuery, …), or 429s for
 *   `GLOBAL_429_CHATS` different chats within a second, mean the bot as a
 *   whole is over the limit: every send is paused.
 * - A wait is a reservation: `take` books the next slot, so callers queued on
 *   one chat leave one after another, not all at once when a pause ends.
 *
 * Gotchas: the state is in memory, per process; a new leader starts with
 * full buckets (at worst it meets one 429 per chat). Past
 * `MAX_TRACKED_CHATS`, idle chats and then the oldest are forgotten
 * (`platform/BoundedMap.ts`), so memory stays bounded however many chats
 * write to the bot.
 */
import { Context, type Effect } from "effect"
import { forgetDown } from "../platform/BoundedMap.ts"
import { isFull, refill, type TokenBucket } from "../platform/TokenBucket.ts"

/** Messages a private chat may get at once before pacing starts. */
export const PRIVATE_BURST = 3
/** Messages a group may get at once before pacing starts. */
export const GROUP_BURST = 3
/** Messages the bot sends on its own, per second, for all chats together. */
export const OWN_PER_SECOND = 30
/** 429s for this many different chats within a second pause every send. */
export const GLOBAL_429_CHATS = 5
/** Above this many tracked chats, idle ones are forgotten. */
export const MAX_TRACKED_CHATS = 20_000

const PRIVATE_PER_MS = 1 / 1_000
const GROUP_PER_MS = 20 / 60_000
const OWN_PER_MS = OWN_PER_SECOND / 1_000

/** A token bucket that may go into debt (each reservation takes a token, waiting until it is there), and a pause. */
interface Bucket extends TokenBucket {
  pausedUntil: number
}

/** Milliseconds until `bucket` has a whole token (and is not paused). */
const waitOf = (bucket: Bucket, capacity: number, perMs: number, now: number) => {
  refill(bucket, capacity, perMs, now)
  const forToken = bucket.tokens >= 1 ? 0 : Math.ceil((1 - bucket.tokens) / perMs)
  return Math.max(forToken, bucket.pausedUntil - now)
}

/** The gate's state; one per process (made by the Telegram client). */
export interface SendGate {
  /**
   * How long a call to `chatId` (undefined: to no chat) would wait now, in
   * milliseconds, without booking anything. `own`: sent on the bot's own
   * initiative (see the module doc).
   */
  readonly waitFor: (chatId: number | undefined, own: boolean, now: number) => number
  /** Books the next slot for a call to `chatId`; returns how long to wait before sending. */
  readonly take: (chatId: number | undefined, own: boolean, now: number) => number
  /** Telegram answered 429 with `retryAfterMs` to a call to `chatId` (undefined: to no chat). */
  readonly rateLimited: (chatId: number | undefined, retryAfterMs: number, now: number) => void
  /** Chats tracked right now (for tests and the memory bound). */
  readonly trackedChats: () => number
}

/** Makes an empty gate; without `pacing` only 429 pauses hold calls back. */
export const makeSendGate = (options: { readonly pacing: boolean }): SendGate => {
  const chats = new Map<number, Bucket>()
  const own: Bucket = { tokens: OWN_PER_SECOND, at: 0, pausedUntil: 0 }
  let globalPausedUntil = 0
  let recent429: Array<{ readonly chatId: number; readonly at: number }> = []

  const shape = (chatId: number) =>
    chatId < 0 ? { capacity: GROUP_BURST, perMs: GROUP_PER_MS } : { capacity: PRIVATE_BURST, perMs: PRIVATE_PER_MS }

  /** Forgets chats whose bucket is full again and that are not paused (then the oldest). */
  const forgetIdle = (now: number) =>
    forgetDown(chats, MAX_TRACKED_CHATS, (bucket, chatId) => {
      const { capacity, perMs } = shape(chatId)
      return isFull(bucket, capacity, perMs, now) && bucket.pausedUntil <= now
    })

  const bucketOf = (chatId: number, now: number): Bucket => {
    const existing = chats.get(chatId)
    if (existing !== undefined) return existing
    if (chats.size >= MAX_TRACKED_CHATS) forgetIdle(now)
    const made = { tokens: shape(chatId).capacity, at: now, pausedUntil: 0 }
    chats.set(chatId, made)
    return made
  }

  const waitFor = (chatId: number | undefined, isOwn: boolean, now: number) => {
    let wait = Math.max(0, globalPausedUntil - now)
    if (chatId !== undefined) {
      const { capacity, perMs } = shape(chatId)
      const bucket = chats.get(chatId)
      if (bucket !== undefined) wait = Math.max(wait, waitOf(bucket, capacity, perMs, now))
    }
    if (isOwn && chatId !== undefined) wait = Math.max(wait, waitOf(own, OWN_PER_SECOND, OWN_PER_MS, now))
    return wait
  }

  const take = (chatId: number | undefined, isOwn: boolean, now: number) => {
    if (!options.pacing) return waitFor(chatId, isOwn, now)
    if (chatId !== undefined) bucketOf(chatId, now)
    const wait = waitFor(chatId, isOwn, now)
    if (chatId !== undefined) chats.get(chatId)!.tokens -= 1
    if (isOwn && chatId !== undefined) own.tokens -= 1
    return wait
  }

  const rateLimited = (chatId: number | undefined, retryAfterMs: number, now: number) => {
    const until = now + retryAfterMs
    if (chatId === undefined) {
      globalPausedUntil = Math.max(globalPausedUntil, until)
      return
    }
    const bucket = bucketOf(chatId, now)
    bucket.pausedUntil = Math.max(bucket.pausedUntil, until)
    // After the pause one message, then one a second: no new burst into a chat Telegram just limited.
    bucket.tokens = Math.min(bucket.tokens, 1)
    bucket.at = Math.max(bucket.at, until)
    recent429 = recent429.filter((entry) => entry.at > now - 1_000 && entry.chatId !== chatId)
    recent429.push({ chatId, at: now })
    if (recent429.length >= GLOBAL_429_CHATS) globalPausedUntil = Math.max(globalPausedUntil, until)
  }

  return { waitFor, take, rateLimited, trackedChats: () => chats.size }
}

/**
 * How the current caller waits for Telegram. The dispatcher provides its own
 * while a handler runs: replies are not `own`, waits release the worker, and
 * a wait longer than `maxWait` makes the update run again later instead.
 */
export interface SendWaits {
  /** Sent on the bot's own initiative (takes from the global bucket). */
  readonly own: boolean
  /** The longest wait (ms) taken in line; a longer one fails with `TelegramRateLimited` at once. */
  readonly maxWaitMillis: number
  /** Runs a wait; the dispatcher lets go of the worker meanwhile. */
  readonly around: <A, E, R>(wait: Effect.Effect<A, E, R>) => Effect.Effect<A, E, R>
}

/** Outside a handler: the bot's own sends, waits up to 30 s in line. */
export const SendWaits = Context.Reference<SendWaits>("zimage-bot/SendWaits", {
  defaultValue: () => ({ own: true, maxWaitMillis: 30_000, around: (wait) => wait })
})
