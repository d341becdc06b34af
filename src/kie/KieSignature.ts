/**
 * Kie's callback signature: with KIE_WEBHOOK_HMAC_KEY set, Kie sends
 * `X-Webhook-Signature` = `base64(HMAC-SHA256(taskId + "." + timestamp, key))`
 * and `X-Webhook-Timestamp` (Unix seconds). Pure functions, so the route and
 * the tests share them.
 */
import { Duration } from "effect"
import { createHash, createHmac, timingSafeEqual } from "node:crypto"

/** Signed callbacks older or newer than this are rejected (replay protection). */
export const SIGNATURE_MAX_AGE: Duration.Duration = Duration.minutes(5)

/** The outcome of checking a callback's signature headers. */
export type SignatureCheck = "ok" | "missing" | "malformed-timestamp" | "stale" | "mismatch"

/** `base64(HMAC-SHA256(taskId + "." + timestamp, key))`, as Kie signs callbacks. */
export const expectedSignature = (key: string, taskId: string, timestamp: string): string =>
  createHmac("sha256", key).update(`${taskId}.${timestamp}`).digest("base64")

/** Compares in constant time, whatever the lengths (hashing first hides them). */
export const constantTimeEquals = (a: string, b: string): boolean =>
  timingSafeEqual(createHash("sha256").update(a).digest(), createHash("sha256").update(b).digest())

/**
 * Checks `X-Webhook-Signature` / `X-Webhook-Timestamp` (Unix seconds) for a
 * task at `nowMillis`; timestamps further than `maxAge` from now either way
 * are rejected.
 */
export const checkSignature = (options: {
  readonly key: string
  readonly taskId: string
  readonly signature: string | undefined
  readonly timestamp: string | undefined
  readonly nowMillis: number
  readonly maxAge?: Duration.Duration
}): SignatureCheck => {
  const { signature, timestamp } = options
  if (signature === undefined || signature === "" || timestamp === undefined || timestamp === "") return "missing"
  if (!/^\d{1,12}$/.test(timestamp)) return "malformed-timestamp"
  const ageMillis = Math.abs(options.nowMillis - Number(timestamp) * 1000)
  if (ageMillis > Duration.toMillis(options.maxAge ?? SIGNATURE_MAX_AGE)) return "stale"
  return constantTimeEquals(expectedSignature(options.key, options.taskId, timestamp), signature.trim())
    ? "ok"
    : "mismatch"
}
