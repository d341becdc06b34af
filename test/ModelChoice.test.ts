/**
 * Choosing a model (MODELS, SINGLE_MODEL_ONLY=false) through the whole
 * service: the welcome lists the models, a model's button leads to its own
 * ratios, the generation is recorded with that model, and the choice is
 * remembered for "🖼 Новая картинка". Also MODELS and EDIT_MODEL at startup.
 */
import { assert, describe, it } from "@effect/vitest"
import { ConfigProvider, Effect, Option } from "effect"
import { SqlClient } from "effect/sql/SqlClient"
import { ChatSessions } from "../src/chat/ChatSessions.ts"
import { checkConfiguredModels } from "../src/kie/ModelCatalog.ts"
import { AppConfig } from "../src/platform/AppConfig.ts"
import { t } from "../src/texts/Messages.ts"
import * as FakeTelegram from "./fakes/FakeTelegram.ts"
import { awaitInboxIdle, startApp } from "./support/TestApp.ts"
import { baseEnv } from "./support/TestConfig.ts"
import { freshDatabaseUrl } from "./support/TestDatabase.ts"

type Fake = FakeTelegram.FakeTelegramShape

const buttons = (call: FakeTelegram.RecordedCall): Array<[string, string]> => {
  const markup = call.params.reply_markup as { inline_keyboard?: Array<Array<{ text: string; callback_data: string }>> }
  return (markup?.inline_keyboard ?? []).flat().map((b) => [b.text, b.callback_data])
}

const exchange = (fake: Fake, update: Record<string, unknown>, chatId: number) =>
  Effect.gen(function*() {
    const after = fake.mark()
    const updateId = fake.pushUpdate(update)
    const call = yield* fake.awaitCall("sendMessage", (c) => Number(c.params.chat_id) === chatId, {
      after,
      timeoutMs: 10_000
    })
    return { call, updateId }
  })

const configWith = (env: Record<string, string>) =>
  AppConfig.load.pipe(Effect.provideService(ConfigProvider.ConfigProvider, ConfigProvider.fromUnknown(env)))

describe("choosing a model", () => {
  it.live("/start lists the models; a model's button leads to its ratios; the generation and the memory keep it", () =>
    Effect.gen(function*() {
      const fake = yield* FakeTelegram.make()
      const app = yield* startApp({
        ...fake.env,
        DATABASE_URL: yield* freshDatabaseUrl,
        SINGLE_MODEL_ONLY: "false",
        MODELS: "z-image, gpt-image/1.5-text-to-image"
      })
      const chatId = 7001
      const welcome = yield* exchange(fake, FakeTelegram.textMessage({ chatId, text: "/start" }), chatId)
      assert.isTrue(String(welcome.call.params.text).startsWith(t("ru").welcomeModels))
      assert.include(String(welcome.call.params.text), "GPT Image 1.5")
      assert.deepStrictEqual(buttons(welcome.call), [
        ["🖼 Z-Image", "zimage:model:z-image"],
        ["🖼 GPT Image 1.5", "zimage:model:gpt-image/1.5-text-to-image"]
      ])
      const messageId = FakeTelegram.messageIdOf(welcome.call)
      const ask = yield* exchange(
        fake,
        FakeTelegram.callbackQuery({ chatId, data: "zimage:model:gpt-image/1.5-text-to-image", messageId }),
        chatId
      )
      assert.strictEqual(ask.call.params.text, t("ru").askPrompt)
      const ratios = yield* exchange(fake, FakeTelegram.textMessage({ chatId, text: "лиса в снегу" }), chatId)
      assert.deepStrictEqual(buttons(ratios.call).map(([, data]) => data), [
        "zimage:ratio:1:1",
        "zimage:ratio:3:2",
        "zimage:ratio:2:3"
      ])
      const keyboard = FakeTelegram.messageIdOf(ratios.call)
      const status = yield* exchange(
        fake,
        FakeTelegram.callbackQuery({ chatId, data: "zimage:ratio:3:2", messageId: keyboard }),
        chatId
      )
      assert.strictEqual(status.call.params.text, t("ru").generating)
      yield* awaitInboxIdle(app, status.updateId)
      const rows = yield* app.run(Effect.gen(function*() {
        const sql = yield* SqlClient
        return yield* sql<{ model: string; aspect_ratio: string }>`
          SELECT model, aspect_ratio FROM generations WHERE chat_id = ${chatId}`
      }))
      assert.deepStrictEqual(rows.map((r) => [r.model, r.aspect_ratio]), [["gpt-image/1.5-text-to-image", "3:2"]])
      const session = yield* app.run(Effect.flatMap(Effect.service(ChatSessions), (s) => s.get(chatId, chatId)))
      assert.deepStrictEqual(Option.map(session, (s) => s.model), Option.some("gpt-image/1.5-text-to-image"))

      // "🖼 Новая картинка" (zimage:start) later: the remembered model's ratios again.
      yield* exchange(fake, FakeTelegram.callbackQuery({ chatId, data: "zimage:start", messageId }), chatId)
      const again = yield* exchange(fake, FakeTelegram.textMessage({ chatId, text: "ещё лиса" }), chatId)
      assert.deepStrictEqual(buttons(again.call).map(([text]) => text), ["1:1", "3:2", "2:3"])
    }))

  it.effect("MODELS and EDIT_MODEL: defaults, lists, off; an unknown id stops startup with one line naming it", () =>
    Effect.gen(function*() {
      const defaults = yield* configWith(baseEnv)
      assert.deepStrictEqual(defaults.models, ["z-image"])
      assert.deepStrictEqual(defaults.editModel, Option.some("google/nano-banana-edit"))
      assert.strictEqual(defaults.kieUploadBaseUrl, "https://kieai.redpandaai.co")
      yield* checkConfiguredModels(defaults)

      const off = yield* configWith({ ...baseEnv, EDIT_MODEL: "off", MODELS: "google/nano-banana,z-image,z-image" })
      assert.deepStrictEqual(off.models, ["google/nano-banana", "z-image"])
      assert.isTrue(Option.isNone(off.editModel))
      yield* checkConfiguredModels(off)

      const unknown = yield* configWith({ ...baseEnv, MODELS: "z-image,midjourney-v7" })
      const error = yield* Effect.flip(checkConfiguredModels(unknown))
      assert.strictEqual(error.variable, "MODELS")
      assert.include(error.message, "midjourney-v7")
      assert.notInclude(error.message, "\n")
      const editor = yield* Effect.flip(
        checkConfiguredModels({ models: ["z-image"], editModel: Option.some("z-image") })
      )
      assert.strictEqual(editor.variable, "EDIT_MODEL")
      const bad = yield* Effect.flip(configWith({ ...baseEnv, MODELS: "z image" }))
      assert.strictEqual(bad.variable, "MODELS")
    }))
})
