/**
 * The Telegram client's two tables, driven alone: `BlockedChats`
 * (`telegram_chats`) and `WebhookFingerprint` (`telegram_webhook`).
 */
import { assert, describe, layer } from "@effect/vitest"
import { Clock, Effect, Layer, Option, Redacted } from "effect"
import { SqlClient } from "effect/sql/SqlClient"
import { TestClock } from "effect/testing"
import type { WebhookInfo } from "grammy/types"
import * as BlockedChats from "../src/telegram/BlockedChats.ts"
import * as WebhookFingerprint from "../src/telegram/WebhookFingerprint.ts"
import { makeLogCapture } from "./support/LogCapture.ts"
import { TestConfigLive } from "./support/TestConfig.ts"
import { TestDatabaseLive } from "./support/TestDatabase.ts"

const Live = TestDatabaseLive.pipe(Layer.provide(TestConfigLive()))

const spec: WebhookFingerprint.WebhookSpec = {
  url: "https://bot.example.com/telegram/webhook",
  secretToken: Redacted.make("secret-1"),
  allowedUpdates: ["message", "callback_query"],
  maxConnections: 40
}
const token = Redacted.make("123:token")
const info = (over: Partial<WebhookInfo> = {}): WebhookInfo => ({
  url: spec.url,
  has_custom_certificate: false,
  pending_update_count: 0,
  max_connections: spec.maxConnections,
  allowed_updates: ["callback_query", "message"],
  ...over
})

describe("Telegram tables", () => {
  layer(Live, { timeout: "60 seconds" })((it) => {
    it.effect("BlockedChats: marked, read, cleared once (logged), duplicates and unsafe ids ignored", () =>
      Effect.gen(function*() {
        const chats = yield* BlockedChats.make
        const sql = yield* SqlClient
        const logs = makeLogCapture()
        assert.isFalse(yield* chats.isBlocked(501))
        yield* TestClock.adjust("1 hour")
        yield* chats.markBlocked(501, "Forbidden: bot was blocked by the user").pipe(Effect.provide(logs.layer))
        assert.isTrue(yield* chats.isBlocked(501))
        assert.isFalse(yield* chats.isBlocked(502))
        const [row] = yield* sql<{ reason: string; at: Date }>`
          SELECT blocked_reason AS reason, blocked_at AS at FROM telegram_chats WHERE chat_id = 501`
        assert.strictEqual(row!.reason, "Forbidden: bot was blocked by the user")
        assert.strictEqual(row!.at.getTime(), 3_600_000, "stamped from the Effect clock")

        yield* chats.markUnblocked([501, 501, 502, Number.MAX_SAFE_INTEGER + 2]).pipe(Effect.provide(logs.layer))
        yield* chats.markUnblocked(501).pipe(Effect.provide(logs.layer))
        assert.isFalse(yield* chats.isBlocked(501))
        const messages = logs.lines().map((line) => line.message)
        assert.deepStrictEqual(messages, [
          "[TELEGRAM] chat 501 marked blocked: Forbidden: bot was blocked by the user",
          "[TELEGRAM] chat 501 unblocked (an update arrived from it)"
        ])
      }))

    it.effect("BlockedChats: one call clears ids of every size (small, over 32 bits, negative group ids)", () =>
      Effect.gen(function*() {
        const chats = yield* BlockedChats.make
        // Telegram's ids go up to 52 bits: a batch mixes ids that fit in 32 bits with ones that do not.
        const ids = [601, 7_000_000_001, -1_001_234_567_890]
        for (const id of ids) yield* chats.markBlocked(id, "Forbidden: bot was blocked by the user")
        yield* chats.markUnblocked(ids)
        for (const id of ids) assert.isFalse(yield* chats.isBlocked(id), `chat ${id} unblocked`)

        for (const id of ids) yield* chats.markBlocked(id, "Forbidden: bot was blocked by the user")
        yield* TestClock.adjust("1 second")
        const arrivedAt = new Date(yield* Clock.currentTimeMillis)
        yield* chats.unblockArrived(ids.map((chatId) => ({ chatId, arrivedAt })))
        for (const id of ids) assert.isFalse(yield* chats.isBlocked(id), `chat ${id} unblocked by its arrival`)
      }))

    it.effect("WebhookFingerprint: none until stored; applied only when Telegram and the fingerprint agree", () =>
      Effect.gen(function*() {
        const fingerprints = yield* WebhookFingerprint.make
        const fingerprint = WebhookFingerprint.fingerprintOf(spec, token)
        assert.isTrue(Option.isNone(yield* fingerprints.read))
        assert.isFalse(WebhookFingerprint.isApplied(info(), spec, yield* fingerprints.read, fingerprint))

        yield* fingerprints.store(fingerprint)
        const stored = yield* fingerprints.read
        assert.deepStrictEqual(stored, Option.some(fingerprint))
        assert.notInclude(fingerprint, "secret-1")
        assert.isTrue(WebhookFingerprint.isApplied(info(), spec, stored, fingerprint))
        assert.isFalse(WebhookFingerprint.isApplied(info({ max_connections: 10 }), spec, stored, fingerprint))
        assert.isFalse(WebhookFingerprint.isApplied(info({ allowed_updates: ["message"] }), spec, stored, fingerprint))

        const rotated = WebhookFingerprint.fingerprintOf({ ...spec, secretToken: Redacted.make("secret-2") }, token)
        assert.notStrictEqual(rotated, fingerprint, "a new secret changes the fingerprint")
        assert.isFalse(WebhookFingerprint.isApplied(info(), spec, stored, rotated))
        yield* fingerprints.store(rotated)
        assert.deepStrictEqual(yield* fingerprints.read, Option.some(rotated))
      }))
  })
})
