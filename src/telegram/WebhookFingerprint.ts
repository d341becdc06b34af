/**
 * What the bot wants Telegram's webhook to be, and the fingerprint of the
 * webhook it last set, kept in the one-row `telegram_webhook` table.
 *
 * Why a fingerprint: Telegram never shows the `secret_token` back, so a
 * changed secret is only visible by comparing a fingerprint of what we last
 * set. It is salted with the bot token so the stored value says nothing about
 * the secret.
 *
 * Gotchas: neither `read` nor `store` fails. An unreadable fingerprint reads
 * as "none" (the webhook is then set again, which is harmless); a fingerprint
 * that could not be stored is logged, and the next start sets it again.
 */
import { DateTime, Effect, Option, Redacted } from "effect"
import { SqlClient } from "effect/sql/SqlClient"
import { createHash } from "node:crypto"
import type { Opts, WebhookInfo } from "grammy/types"
import { readFingerprint } from "./sql/readFingerprint.ts"
import { storeFingerprint } from "./sql/storeFingerprint.ts"

/** The update kinds a webhook delivers. */
export type AllowedUpdates = NonNullable<Opts<"setWebhook">["allowed_updates"]>

/** What the bot wants Telegram's webhook to be. */
export interface WebhookSpec {
  readonly url: string
  readonly secretToken: Redacted.Redacted<string>
  readonly allowedUpdates: AllowedUpdates
  readonly maxConnections: number
}

/** The fingerprint of `spec` as set with `botToken`. */
export const fingerprintOf = (spec: WebhookSpec, botToken: Redacted.Redacted<string>): string =>
  createHash("sha256")
    .update(
      JSON.stringify([
        Redacted.value(botToken),
        spec.url,
        Redacted.value(spec.secretToken),
        [...spec.allowedUpdates].sort(),
        spec.maxConnections
      ])
    )
    .digest("hex")

const sameSet = (a: ReadonlyArray<string>, b: ReadonlyArray<string>): boolean =>
  a.length === b.length && a.every((x) => b.includes(x))

/** Whether the webhook Telegram reports, with the stored fingerprint, already is `spec` (`fingerprint`). */
export const isApplied = (
  info: WebhookInfo,
  spec: WebhookSpec,
  stored: Option.Option<string>,
  fingerprint: string
): boolean =>
  info.url === spec.url &&
  info.max_connections === spec.maxConnections &&
  sameSet(info.allowed_updates ?? [], spec.allowedUpdates) &&
  Option.contains(stored, fingerprint)

/** The stored fingerprint of the last webhook set. */
export interface WebhookFingerprint {
  /** The stored fingerprint; none if there is none or it could not be read. */
  readonly read: Effect.Effect<Option.Option<string>>
  /** Stores the fingerprint of the webhook just set. Never fails (logged). */
  readonly store: (fingerprint: string) => Effect.Effect<void>
}

/** The fingerprint on the `telegram_webhook` table (migration 0002). */
export const make: Effect.Effect<WebhookFingerprint, never, SqlClient> = Effect.gen(function*() {
  const sql = yield* SqlClient
  return {
    read: readFingerprint(sql).pipe(Effect.catchCause(() => Effect.succeed(Option.none<string>()))),
    store: (fingerprint) =>
      Effect.flatMap(DateTime.now, (at) => storeFingerprint(sql, fingerprint, DateTime.toDateUtc(at))).pipe(
        Effect.asVoid,
        Effect.catchCause(() =>
          Effect.logWarning("[TELEGRAM] webhook set, but its fingerprint could not be stored (it will be set again)")
        )
      )
  }
})
