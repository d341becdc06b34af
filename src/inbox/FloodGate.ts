/**
 * The inbox's flood gate: updates beyond a chat's or a user's rate are
 * acknowledged (Telegram is told they arrived) but never stored.
 *
 * When to use: `Inbox.store` passes every incoming batch through it, on
 * every instance, before anything is written. What it lets through is
 * stored and handled as usual; the dispatcher's `FloodWatch` then keeps a
 * flood that got through from being answered message by message.
 *
 * Details: one token bucket per chat (`FLOOD_CHAT_RATE`) and one per user
 * (`FLOOD_USER_RATE`, over all chats); an update passes only if both have a
 * token, and takes one from each. Updates of no chat and no user (kinds the
 * bot does not handle) always pass. Each dropped update is counted in
 * `zimage_updates_dropped_total{reason="flood"}`.
 *
 * Gotchas: the buckets are in memory, per instance; with two instances
 * taking webhooks a flooder gets at most twice the rate stored. Past
 * `MAX_TRACKED` keys, full buckets and then the oldest are forgotten
 * (`platform/BoundedMap.ts`), so memory stays bounded however many chats
 * write.
 */
import { Duration } from "effect"
import type { RateBudget } from "../platform/AppConfig.ts"
import { forgetDown } from "../platform/BoundedMap.ts"
import { fullBucket, isFull, refill, type TokenBucket } from "../platform/TokenBucket.ts"
import type { UpdateEnvelope } from "../telegram/TelegramUpdate.ts"
import { routed, type RoutedUpdate } from "./sql/store.ts"

/** Above this many tracked chats and users, full buckets are forgotten. */
export const MAX_TRACKED = 50_000

/** The gate's rates. */
export interface FloodRates {
  readonly perChat: RateBudget
  readonly perUser: RateBudget
}

/**
 * Splits a batch into what is stored and what is dropped. What it admits
 * comes routed, so the store does not work the routing out again.
 */
export interface FloodGate {
  readonly admit: (
    updates: ReadonlyArray<UpdateEnvelope>,
    now: number
  ) => { readonly admitted: ReadonlyArray<RoutedUpdate>; readonly dropped: number }
  /** Chats and users tracked right now (for tests of the memory bound). */
  readonly tracked: () => number
}

interface Rate {
  readonly capacity: number
  readonly perMs: number
}

const rateOf = (budget: RateBudget): Rate => ({
  capacity: budget.count,
  perMs: budget.count / Duration.toMillis(budget.window)
})

/** Makes a gate with empty memory. */
export const makeFloodGate = (rates: FloodRates): FloodGate => {
  const chat = rateOf(rates.perChat)
  const user = rateOf(rates.perUser)
  const buckets = new Map<string, { readonly bucket: TokenBucket; readonly rate: Rate }>()

  const forgetFull = (now: number) =>
    forgetDown(buckets, MAX_TRACKED, ({ bucket, rate }) => isFull(bucket, rate.capacity, rate.perMs, now))

  const bucketOf = (key: string, rate: Rate, now: number): TokenBucket => {
    const known = buckets.get(key)
    if (known !== undefined) {
      refill(known.bucket, rate.capacity, rate.perMs, now)
      return known.bucket
    }
    if (buckets.size >= MAX_TRACKED) forgetFull(now)
    const bucket = fullBucket(rate.capacity, now)
    buckets.set(key, { bucket, rate })
    return bucket
  }

  const passes = ({ routing }: RoutedUpdate, now: number): boolean => {
    const { chatId, userId } = routing
    const taken: Array<TokenBucket> = []
    if (chatId !== null) taken.push(bucketOf(`chat:${chatId}`, chat, now))
    if (userId !== null) taken.push(bucketOf(`user:${userId}`, user, now))
    if (taken.some((bucket) => bucket.tokens < 1)) return false
    for (const bucket of taken) bucket.tokens -= 1
    return true
  }

  return {
    admit: (updates, now) => {
      const admitted = updates.map(routed).filter((update) => passes(update, now))
      return { admitted, dropped: updates.length - admitted.length }
    },
    tracked: () => buckets.size
  }
}
