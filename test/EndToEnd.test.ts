import { assert, layer } from "@effect/vitest"
import { Effect, Layer } from "effect"
import { performance } from "node:perf_hooks"
import * as Dispatcher from "../src/dispatch/Dispatcher.ts"
import { Telegram } from "../src/telegram/Telegram.ts"
import { WEBHOOK_PATH, WebhookRoute } from "../src/intake/TelegramWebhook.ts"
import { UpdateHandler } from "../src/dispatch/UpdateHandler.ts"
import * as FakeTelegram from "./fakes/FakeTelegram.ts"
import { becomeLeader, chatIdOf, PipelineLive, rows } from "./support/Pipeline.ts"
import { TEST_WEBHOOK_SECRET } from "./support/TestConfig.ts"
import { serverUrl, TestHttpServerLive } from "./support/TestHttpServer.ts"

const env = { PUBLIC_URL: "https://zimage.example.com", TELEGRAM_WEBHOOK_SECRET: TEST_WEBHOOK_SECRET, WORKERS: "4" }

const Live = TestHttpServerLive(WebhookRoute).pipe(Layer.provideMerge(PipelineLive(env)))

const percentile = (values: ReadonlyArray<number>, p: number) => {
  const sorted = [...values].sort((a, b) => a - b)
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))]!
}

layer(Live, { timeout: "60 seconds" })("end to end", (it) => {
  it.effect("Telegram delivers by webhook, the update is stored, dispatched and answered", () =>
    Effect.gen(function*() {
      const fake = yield* FakeTelegram.FakeTelegram
      const telegram = yield* Telegram
      const started = new Map<number, number>()
      // A stand-in for the chat flow: answers every message.
      const echo = UpdateHandler.of({
        handle: (update, context) =>
          Effect.gen(function*() {
            started.set(context.updateId, performance.now())
            const chatId = chatIdOf(update)!
            yield* telegram.sendMessage({ chat_id: chatId, text: `echo ${update.message?.text}` }).pipe(Effect.orDie)
          })
      })
      yield* becomeLeader(Dispatcher.layer, echo)
      fake.setWebhookDirectly((yield* serverUrl) + WEBHOOK_PATH, TEST_WEBHOOK_SECRET)

      const acks: Array<number> = []
      const toHandler: Array<number> = []
      const roundTrip: Array<number> = []
      for (let i = 0; i < 40; i++) {
        const before = fake.mark()
        const chatId = 900 + (i % 7)
        const t0 = performance.now()
        const wall = Date.now()
        const id = fake.pushUpdate(FakeTelegram.textMessage({ chatId, text: `hi ${i}` }))
        const delivery = yield* fake.awaitDelivery((d) => d.updateId === id)
        assert.strictEqual(delivery.status, 200)
        acks.push(delivery.at - wall)
        yield* fake.awaitCall("sendMessage", (c) => c.params.text === `echo hi ${i}`, { after: before })
        roundTrip.push(performance.now() - t0)
        toHandler.push(started.get(id)! - t0)
      }
      const stored = yield* rows
      assert.strictEqual(stored.length, 40)
      assert.strictEqual(fake.pendingUpdates().length, 0, "every delivery was acknowledged")
      // Telegram redelivers (e.g. after a timeout on its side): stored once, answered once.
      const replayed = stored[0]!.update_id
      const before = fake.mark()
      const delivered = fake.deliveries().length
      fake.pushUpdate(FakeTelegram.textMessage({ chatId: 900, text: "hi 0", updateId: replayed }))
      const again = yield* fake.awaitDelivery((d) => d.updateId === replayed, { after: delivered })
      assert.strictEqual(again.status, 200)
      assert.strictEqual((yield* rows).length, 40)
      assert.lengthOf(fake.calls("sendMessage").filter((c) => c.seq > before), 0)

      if (process.env.MEASURE === "1") {
        const line = (name: string, values: ReadonlyArray<number>) =>
          `${name}: p50 ${percentile(values, 50).toFixed(1)} ms, p95 ${percentile(values, 95).toFixed(1)} ms, max ${
            Math.max(...values).toFixed(1)
          } ms`
        console.log(line("push → webhook 200 (stored)", acks))
        console.log(line("push → handler start", toHandler))
        console.log(line("push → sendMessage at the fake", roundTrip))
      }
    }))
})
