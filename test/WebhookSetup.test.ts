import { assert, layer } from "@effect/vitest"
import { Effect } from "effect"
import { TestClock } from "effect/testing"
import * as LeaderServices from "../src/LeaderServices.ts"
import * as WebhookSetup from "../src/intake/WebhookSetup.ts"
import * as FakeTelegram from "./fakes/FakeTelegram.ts"
import { makeLogCapture } from "./support/LogCapture.ts"
import { becomeLeader, makeRecordingHandler, PipelineLive } from "./support/Pipeline.ts"
import { TEST_WEBHOOK_SECRET } from "./support/TestConfig.ts"

const env = { PUBLIC_URL: "https://zimage.example.com", TELEGRAM_WEBHOOK_SECRET: TEST_WEBHOOK_SECRET }
const URL = "https://zimage.example.com/telegram/webhook"

layer(PipelineLive(env), { timeout: "60 seconds" })("webhook mode", (it) => {
  it.effect("on becoming ACTIVE the leader sets the webhook once; the next term only checks it", () =>
    Effect.gen(function*() {
      const fake = yield* FakeTelegram.FakeTelegram
      const recorder = yield* makeRecordingHandler
      const logs = makeLogCapture()
      const start = fake.mark()
      // The intake LeaderServices picks with PUBLIC_URL is the webhook setup, never getUpdates.
      const first = yield* becomeLeader(LeaderServices.intakeLayer, recorder.handler).pipe(Effect.provide(logs.layer))
      yield* logs.awaitLine((l) => l.message === `[WEBHOOK] webhook set to ${URL} (max_connections 40)`)
      const set = fake.calls("setWebhook").filter((c) => c.seq > start)
      assert.lengthOf(set, 1)
      assert.deepInclude(set[0]!.params, {
        url: URL,
        secret_token: TEST_WEBHOOK_SECRET,
        max_connections: WebhookSetup.WEBHOOK_MAX_CONNECTIONS,
        drop_pending_updates: false
      })
      assert.deepStrictEqual(set[0]!.params.allowed_updates, ["message", "callback_query"])
      const infoBeforeSet = fake.calls().filter((c) => c.seq > start).map((c) => c.method)
      assert.deepStrictEqual(infoBeforeSet, ["getWebhookInfo", "setWebhook"], "looks before it sets")
      yield* first.release

      const again = fake.mark()
      yield* becomeLeader(LeaderServices.intakeLayer, recorder.handler).pipe(Effect.provide(logs.layer))
      yield* logs.awaitLine((l) => l.message === `[WEBHOOK] webhook already set to ${URL}`)
      assert.deepStrictEqual(fake.calls().filter((c) => c.seq > again).map((c) => c.method), ["getWebhookInfo"])
      assert.lengthOf(fake.calls("getUpdates"), 0)
      assert.strictEqual(fake.webhook()?.secretToken, TEST_WEBHOOK_SECRET)
    }))

  it.effect("a failing setWebhook is retried with backoff on the clock", () =>
    Effect.gen(function*() {
      const fake = yield* FakeTelegram.FakeTelegram
      const recorder = yield* makeRecordingHandler
      const logs = makeLogCapture()
      // Someone else moved the webhook; putting it back fails once.
      fake.setWebhookDirectly("https://elsewhere.example.com/hook", "other")
      fake.failNext("setWebhook", FakeTelegram.failure.serverError())
      const start = fake.mark()
      yield* becomeLeader(WebhookSetup.layer, recorder.handler).pipe(Effect.provide(logs.layer))
      yield* logs.awaitLine((l) => l.message.startsWith("[WEBHOOK] could not set the webhook, retrying"))
      assert.lengthOf(fake.calls("setWebhook").filter((c) => c.seq > start), 1)
      yield* TestClock.adjust("3 seconds")
      yield* logs.awaitLine((l) => l.message === `[WEBHOOK] webhook set to ${URL} (max_connections 40)`)
      assert.strictEqual(fake.webhook()?.url, URL)
    }))

  it.effect("failed deliveries show up in getWebhookInfo, like Telegram", () =>
    Effect.gen(function*() {
      const fake = yield* FakeTelegram.FakeTelegram
      // Nothing listens on port 9: delivery fails, is recorded and shows up in getWebhookInfo.
      fake.setWebhookDirectly("http://127.0.0.1:9/telegram/webhook", "s")
      const id = fake.pushUpdate(FakeTelegram.textMessage({ chatId: 5, text: "x" }))
      const delivery = yield* fake.awaitDelivery((d) => d.updateId === id)
      assert.strictEqual(delivery.status, "error")
      assert.strictEqual(fake.webhook()?.lastErrorMessage, "Connection refused")
      fake.setWebhookDirectly("", undefined)
    }))
})
