/**
 * The token bucket both flood controls are made of: `capacity` tokens, one
 * more every `1 / perMs` milliseconds, a call takes one.
 *
 * Details: times are plain milliseconds handed in by the caller (the Effect
 * clock's, so `TestClock` drives them); a bucket never refills backwards
 * when handed an earlier time.
 */

/** One bucket's state: tokens at time `at` (may be negative when callers booked ahead). */
export interface TokenBucket {
  tokens: number
  at: number
}

/** A full bucket at `now`. */
export const fullBucket = (capacity: number, now: number): TokenBucket => ({ tokens: capacity, at: now })

/** Brings `bucket` up to `now`: the tokens earned since, up to `capacity`. */
export const refill = (bucket: TokenBucket, capacity: number, perMs: number, now: number): void => {
  if (now > bucket.at) {
    bucket.tokens = Math.min(capacity, bucket.tokens + (now - bucket.at) * perMs)
    bucket.at = now
  }
}

/** Whether `bucket` is full again at `now` (its owner can be forgotten). */
export const isFull = (bucket: TokenBucket, capacity: number, perMs: number, now: number): boolean => {
  refill(bucket, capacity, perMs, now)
  return bucket.tokens >= capacity
}
