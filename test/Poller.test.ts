import { assert, layer } from "@effect/vitest"
import { Effect } from "effect"
import { SqlClient } from "effect/sql/SqlClient"
import { TestClock } from "effect/testing"
import * as LeaderServices from "../src/LeaderServices.ts"
import * as Poller from "../src/intake/Poller.ts"
import { Telegram } from "../src/telegram/Telegram.ts"
import * as FakeTelegram from "./fakes/FakeTelegram.ts"
import { makeLogCapture } from "./support/LogCapture.ts"
import { becomeLeader, clearInbox, makeRecordingHandler, PipelineLive, rowOf, rows } from "./support/Pipeline.ts"

const CONFLICT = "Conflict: terminated by other getUpdates request; make sure that only one bot instance is running"

layer(PipelineLive(), { timeout: "60 seconds" })("long polling", (it) => {
  it.effect("deleteWebhook first (keeping pending updates), then getUpdates; a batch is confirmed only after it is stored", () =>
    Effect.gen(function*() {
      yield* clearInbox
      const fake = yield* FakeTelegram.FakeTelegram
      const recorder = yield* makeRecordingHandler
      fake.setWebhookDirectly("https://old-deployment.example.com/telegram/webhook", "old")
      const a = fake.pushUpdate(FakeTelegram.textMessage({ chatId: 21, text: "/start" }))
      const b = fake.pushUpdate(FakeTelegram.callbackQuery({ chatId: 22, data: "zimage:start" }))
      const start = fake.mark()
      // The intake LeaderServices picks without PUBLIC_URL is the poller.
      yield* becomeLeader(LeaderServices.intakeLayer, recorder.handler)

      const confirming = yield* fake.awaitCall("getUpdates", (c) => c.params.offset === b + 1, { after: start })
      const calls = fake.calls().filter((c) => c.seq > start)
      assert.deepStrictEqual(calls.slice(0, 2).map((c) => c.method), ["deleteWebhook", "getUpdates"])
      assert.strictEqual(calls[0]!.params.drop_pending_updates, false)
      assert.strictEqual(calls[0]!.response?.status, 200)
      const first = calls[1]!
      assert.isUndefined(first.params.offset)
      assert.strictEqual(first.params.timeout, Poller.POLL_TIMEOUT_SECONDS)
      assert.strictEqual(first.params.limit, 100)
      assert.deepStrictEqual(first.params.allowed_updates, ["message", "callback_query"])
      assert.deepStrictEqual(
        (first.response!.body as { result: Array<{ update_id: number }> }).result.map((u) => u.update_id),
        [a, b]
      )
      // Both rows were committed before the call that confirms them.
      const stored = yield* rows
      assert.deepStrictEqual(stored.map((r) => [r.update_id, r.chat_id, r.status]), [
        [a, 21, "pending"],
        [b, 22, "pending"]
      ])
      assert.isTrue(confirming.seq > first.seq)
      assert.lengthOf(fake.pendingUpdates(), 0, "confirmed at Telegram")
      assert.isUndefined(fake.webhook())
      assert.strictEqual(fake.heldPolls(), 1, "and now it long-polls for more")
    }))

  it.effect("a batch that cannot be stored is never confirmed; it is stored and confirmed once the database is back", () =>
    Effect.gen(function*() {
      yield* clearInbox
      const sql = yield* SqlClient
      const fake = yield* FakeTelegram.FakeTelegram
      const recorder = yield* makeRecordingHandler
      const logs = makeLogCapture()
      const start = fake.mark()
      yield* becomeLeader(Poller.layer, recorder.handler).pipe(Effect.provide(logs.layer))
      yield* fake.awaitCall("getUpdates", () => true, { after: start })

      yield* sql`ALTER TABLE telegram_updates RENAME TO telegram_updates_away`
      const id = fake.pushUpdate(FakeTelegram.textMessage({ chatId: 23, text: "hello" }))
      yield* logs.awaitLine((l) => l.message.startsWith("[POLL] could not store 1 update(s), not confirming them"))
      yield* logs.awaitLine((l) => l.message.startsWith("[POLL] next attempt in"))
      const since = fake.calls("getUpdates").filter((c) => c.seq > start)
      assert.lengthOf(since, 1, "no getUpdates (which would confirm) while the batch is not stored")
      assert.deepStrictEqual(fake.pendingUpdates().map((u) => u.update_id), [id])

      yield* sql`ALTER TABLE telegram_updates_away RENAME TO telegram_updates`
      yield* TestClock.adjust("2 seconds")
      yield* fake.awaitCall("getUpdates", (c) => c.params.offset === id + 1, { after: start })
      assert.strictEqual((yield* rowOf(id))?.status, "pending")
      yield* logs.awaitLine((l) => l.message === "[POLL] polling works again")
    }))

  it.effect("an update with a lone surrogate or NUL (jsonb refuses both) is stored with U+FFFD; polling goes on", () =>
    Effect.gen(function*() {
      yield* clearInbox
      const sql = yield* SqlClient
      const fake = yield* FakeTelegram.FakeTelegram
      const recorder = yield* makeRecordingHandler
      const start = fake.mark()
      // The fake answers with JSON.stringify, which writes these as the escapes `\ud800` and `\u0000`.
      const odd = fake.pushUpdate(FakeTelegram.textMessage({ chatId: 25, text: "x\ud800y\u0000z" }))
      yield* becomeLeader(Poller.layer, recorder.handler)
      yield* fake.awaitCall("getUpdates", (c) => c.params.offset === odd + 1, { after: start })
      const [stored] = yield* sql<{ text: string }>`
        SELECT payload->'message'->>'text' AS text FROM telegram_updates WHERE update_id = ${odd}`
      assert.strictEqual(stored?.text, "x\uFFFDy\uFFFDz")

      const next = fake.pushUpdate(FakeTelegram.textMessage({ chatId: 25, text: "after" }))
      yield* fake.awaitCall("getUpdates", (c) => c.params.offset === next + 1, { after: start })
      assert.strictEqual((yield* rowOf(next))?.status, "pending")
      assert.lengthOf(fake.pendingUpdates(), 0, "both confirmed at Telegram")
    }))

  it.effect("409 Conflict backs off on the clock and is logged once per change", () =>
    Effect.gen(function*() {
      yield* clearInbox
      const fake = yield* FakeTelegram.FakeTelegram
      const recorder = yield* makeRecordingHandler
      const logs = makeLogCapture()
      fake.failNext("getUpdates", FakeTelegram.failure.error(409, CONFLICT), 2)
      const start = fake.mark()
      yield* becomeLeader(Poller.layer, recorder.handler).pipe(Effect.provide(logs.layer))

      yield* logs.awaitLine((l) => l.message.startsWith("[POLL] next attempt in"))
      assert.lengthOf(fake.calls("getUpdates").filter((c) => c.seq > start), 1)
      yield* TestClock.adjust("4 seconds")
      assert.lengthOf(fake.calls("getUpdates").filter((c) => c.seq > start), 1, "backs off at least 4 s")
      const second = logs.mark()
      yield* TestClock.adjust("2 seconds")
      yield* logs.awaitLine((l) => l.message.startsWith("[POLL] next attempt in"), { after: second })
      assert.lengthOf(fake.calls("getUpdates").filter((c) => c.seq > start), 2)
      yield* TestClock.adjust("12 seconds")
      yield* fake.awaitCall("getUpdates", () => true, {
        after: fake.calls("getUpdates").filter((c) => c.seq > start)[1]!.seq
      })
      // The third call is a held long poll; an update ends it successfully.
      fake.pushUpdate(FakeTelegram.textMessage({ chatId: 24, text: "hi" }))
      yield* logs.awaitLine((l) => l.message === "[POLL] polling works again")
      const warnings = logs.lines().filter((l) => l.level === "WARN" && l.message.includes("409 Conflict"))
      assert.lengthOf(warnings, 1, "two conflicts in a row, one warning")
      assert.include(warnings[0]!.message, "only one bot instance")
    }))

  it.effect("a second getUpdates consumer terminates the held poll with 409, as Telegram does", () =>
    Effect.gen(function*() {
      yield* clearInbox
      const fake = yield* FakeTelegram.FakeTelegram
      const telegram = yield* Telegram
      const recorder = yield* makeRecordingHandler
      const logs = makeLogCapture()
      const start = fake.mark()
      yield* becomeLeader(Poller.layer, recorder.handler).pipe(Effect.provide(logs.layer))
      // A call still unanswered when it is recorded is being held (an earlier test may have left updates queued).
      const held = yield* fake.awaitCall("getUpdates", (c) => c.response === undefined, { after: start })
      // Another instance polls with the same token.
      yield* telegram.getUpdates({ timeout: 0 })
      assert.strictEqual(held.response?.status, 409)
      yield* logs.awaitLine((l) => l.level === "WARN" && l.message.includes("terminated by other getUpdates request"))
    }))
})
