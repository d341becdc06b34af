/**
 * Editing a photo, end to end: the whole service in-process, the fake Bot
 * API (getFile and file downloads) and the fake Kie (upload API and the
 * editing models). The photo's bytes go Telegram → bot → Kie's upload API;
 * the Telegram file URL (it carries the bot token) never leaves the process.
 */
import { assert, describe, it } from "@effect/vitest"
import { Effect } from "effect"
import { SqlClient } from "effect/sql/SqlClient"
import { t } from "../src/texts/Messages.ts"
import { FakeKie, localResult } from "./fakes/FakeKie.ts"
import * as FakeTelegram from "./fakes/FakeTelegram.ts"
import { makePng } from "./support/images.ts"
import { awaitInboxIdle, startApp, startAppScoped } from "./support/TestApp.ts"
import { TEST_BOT_TOKEN, TEST_KIE_KEY } from "./support/TestConfig.ts"
import { freshDatabaseUrl } from "./support/TestDatabase.ts"

type Fake = FakeTelegram.FakeTelegramShape

const withApp = (env: Record<string, string> = {}) =>
  Effect.gen(function*() {
    const fake = yield* FakeTelegram.make()
    const kie = yield* FakeKie.scoped({ apiKey: TEST_KIE_KEY, defaultTask: { steps: ["generating", localResult()] } })
    const app = yield* startApp({
      ...fake.env,
      DATABASE_URL: yield* freshDatabaseUrl,
      KIE_BASE_URL: kie.url,
      KIE_UPLOAD_BASE_URL: kie.url,
      KIE_POLL_INTERVAL_MS: "100",
      ...env
    })
    return { fake, kie, app }
  })

const awaitFor = (fake: Fake, method: string, chatId: number, after: number) =>
  fake.awaitCall(method, (c) => Number(c.params.chat_id) === chatId, { after, timeoutMs: 20_000 })

/** Nothing Kie received mentions the token or a Telegram file path. */
const assertNoTelegramUrl = (kie: FakeKie) => {
  const everything = kie.requests.map((r) => `${r.path} ${r.body}`).join("\n")
  assert.notInclude(everything, TEST_BOT_TOKEN)
  assert.notInclude(everything, "/file/bot")
  for (const task of kie.tasks.values()) assert.notInclude(JSON.stringify(task.body), "photos/file_")
}

describe("editing a photo", () => {
  it.live("a photo with a caption: getFile, upload to Kie, the edit model gets the URL, the picture comes back", () =>
    Effect.gen(function*() {
      const { app, fake, kie } = yield* withApp()
      const chatId = 8101
      const photo = makePng(120, 80)
      const fileId = fake.addFile(photo)
      const before = fake.mark()
      fake.pushUpdate(FakeTelegram.photoMessage({ chatId, fileId, caption: "сделай небо фиолетовым" }))
      const status = yield* awaitFor(fake, "sendMessage", chatId, before)
      assert.strictEqual(status.params.text, t("ru").generating)
      const delivered = yield* awaitFor(fake, "sendPhoto", chatId, before)
      assert.include(String(delivered.params.caption), "✅ Готово!")

      // The largest size was fetched through getFile and downloaded once.
      const getFile = fake.calls("getFile")
      assert.lengthOf(getFile, 1)
      assert.strictEqual(getFile[0]!.params.file_id, fileId)
      assert.lengthOf(fake.fileDownloads(), 1)
      // Its bytes went to Kie's upload API, and the edit model got the upload's URL.
      assert.strictEqual(kie.counters.upload, 1)
      const [upload] = [...kie.uploads.values()]
      assert.deepStrictEqual(Buffer.compare(upload!.bytes, Buffer.from(photo)), 0)
      assert.strictEqual(upload!.uploadPath, "zimage-bot/edits", "the multipart text fields arrive too")
      assert.match(upload!.fileName, /^[\w.-]+$/)
      const task = [...kie.tasks.values()][0]!
      assert.strictEqual(task.body.model, "google/nano-banana-edit")
      assert.deepStrictEqual(task.body.input, {
        prompt: "сделай небо фиолетовым",
        output_format: "png",
        image_urls: [`${kie.url}/uploads/${[...kie.uploads.keys()][0]}`]
      })
      assertNoTelegramUrl(kie)
      const rows = yield* app.run(Effect.gen(function*() {
        const sql = yield* SqlClient
        return yield* sql<{ model: string; aspect_ratio: string; input_urls: Array<string> }>`
          SELECT model, aspect_ratio, input_urls FROM generations WHERE chat_id = ${chatId}`
      }))
      assert.deepStrictEqual(rows.map((r) => [r.model, r.aspect_ratio, r.input_urls.length]), [[
        "google/nano-banana-edit",
        "auto",
        1
      ]])

      // A reply to the delivered picture refines it: its stored result, no new upload.
      const next = fake.mark()
      fake.pushUpdate(FakeTelegram.textMessage({
        chatId,
        text: "а теперь добавь луну",
        replyTo: {
          messageId: FakeTelegram.messageIdOf(delivered),
          // Telegram quotes the replied message whole: the picture the bot sent.
          extra: { photo: [{ file_id: "bot-photo", file_unique_id: "ubot", width: 64, height: 64 }] }
        }
      }))
      const refined = yield* awaitFor(fake, "sendPhoto", chatId, next)
      assert.include(String(refined.params.caption), "✅ Готово!")
      const second = [...kie.tasks.values()][1]!
      assert.strictEqual(second.body.input.prompt, "а теперь добавь луну")
      assert.strictEqual(second.body.input.image_urls[0], rowsResult(kie))
      assert.strictEqual(kie.counters.upload, 1, "the stored result is edited, not uploaded again")
      assertNoTelegramUrl(kie)
    }))

  it.live("a reply to an old picture (its result URL may have expired) edits Telegram's copy of it", () =>
    Effect.gen(function*() {
      const { app, fake, kie } = yield* withApp()
      const chatId = 8105
      const before = fake.mark()
      fake.pushUpdate(FakeTelegram.photoMessage({ chatId, fileId: fake.addFile(makePng(64, 64)), caption: "a" }))
      const delivered = yield* awaitFor(fake, "sendPhoto", chatId, before)
      yield* app.run(Effect.gen(function*() {
        const sql = yield* SqlClient
        yield* sql`UPDATE generations SET created_at = created_at - interval '2 days' WHERE chat_id = ${chatId}`
      }))
      const copy = fake.addFile(makePng(64, 64, 200))
      const next = fake.mark()
      fake.pushUpdate(FakeTelegram.textMessage({
        chatId,
        text: "ещё ярче",
        replyTo: {
          messageId: FakeTelegram.messageIdOf(delivered),
          extra: { photo: [{ file_id: copy, file_unique_id: "ucopy", width: 64, height: 64 }] }
        }
      }))
      yield* awaitFor(fake, "sendPhoto", chatId, next)
      assert.strictEqual(kie.counters.upload, 2, "Telegram's copy was uploaded")
      assert.strictEqual(fake.calls("getFile").at(-1)!.params.file_id, copy)
      const second = [...kie.tasks.values()][1]!
      assert.match(second.body.input.image_urls[0], /\/uploads\//)
    }))

  it.live("a slow upload holds up no one else: another user's edit is made meanwhile", () =>
    Effect.gen(function*() {
      const { fake, kie } = yield* withApp()
      kie.scriptUploads({ hang: true })
      const before = fake.mark()
      fake.pushUpdate(FakeTelegram.photoMessage({ chatId: 8111, fileId: fake.addFile(makePng(64, 64)), caption: "a" }))
      yield* kie.awaitCalls("upload", 1, 10_000)
      fake.pushUpdate(FakeTelegram.photoMessage({ chatId: 8112, fileId: fake.addFile(makePng(64, 64)), caption: "b" }))
      yield* awaitFor(fake, "sendPhoto", 8112, before)
      assert.lengthOf(fake.calls("sendPhoto").filter((c) => Number(c.params.chat_id) === 8111), 0)
    }))

  it.live("a photo without a caption: the bot asks what to change; the answer starts the edit", () =>
    Effect.gen(function*() {
      const { fake, kie } = yield* withApp()
      const chatId = 8102
      const fileId = fake.addFile(makePng(64, 64))
      const before = fake.mark()
      fake.pushUpdate(FakeTelegram.photoMessage({ chatId, fileId, asDocument: true }))
      const ask = yield* awaitFor(fake, "sendMessage", chatId, before)
      assert.strictEqual(ask.params.text, t("ru").askEdit)
      assert.strictEqual(kie.counters.upload, 0)
      const next = fake.mark()
      fake.pushUpdate(FakeTelegram.textMessage({ chatId, text: "убери фон" }))
      yield* awaitFor(fake, "sendPhoto", chatId, next)
      assert.strictEqual([...kie.tasks.values()][0]!.body.input.prompt, "убери фон")
      assert.strictEqual(kie.counters.upload, 1)
    }))

  it.live("a file over 20 MB is refused with a clear message; editing off says so; nothing reaches Kie", () =>
    Effect.gen(function*() {
      const { fake, kie } = yield* withApp()
      const chatId = 8103
      const fileId = fake.addFile(makePng(8, 8), { size: 25 * 1024 * 1024 })
      const before = fake.mark()
      fake.pushUpdate(FakeTelegram.photoMessage({ chatId, fileId, caption: "x", size: 25 * 1024 * 1024 }))
      const refused = yield* awaitFor(fake, "sendMessage", chatId, before)
      assert.strictEqual(refused.params.text, t("ru").fileTooBig)
      assert.strictEqual(kie.counters.upload + kie.counters.createTask, 0)
      assert.lengthOf(fake.calls("getFile"), 0)
    }))

  it.live("an upload Kie refuses: the user gets a plain reason with the retry button; the log names the model", () =>
    Effect.gen(function*() {
      const { fake, kie } = yield* withApp()
      const chatId = 8104
      kie.scriptUploads({ error: 500, msg: "storage unavailable" })
      const fileId = fake.addFile(makePng(64, 64))
      const before = fake.mark()
      fake.pushUpdate(FakeTelegram.photoMessage({ chatId, fileId, caption: "сделай ярче" }))
      const failure = yield* fake.awaitCall(
        "editMessageText",
        (c) => Number(c.params.chat_id) === chatId && String(c.params.text).startsWith("❌"),
        { after: before, timeoutMs: 20_000 }
      )
      assert.include(String(failure.params.text), t("ru").editReasons.uploadFailed)
      const markup = failure.params.reply_markup as { inline_keyboard: Array<Array<{ callback_data: string }>> }
      assert.match(markup.inline_keyboard[0]![0]!.callback_data, /^zimage:retry:\d+$/)
      assert.strictEqual(kie.counters.createTask, 0, "nothing was created, nothing billed")

      // The retry uploads again (free) and makes the picture.
      const next = fake.mark()
      fake.pushUpdate(FakeTelegram.callbackQuery({
        chatId,
        data: markup.inline_keyboard[0]![0]!.callback_data,
        messageId: FakeTelegram.messageIdOf(failure)
      }))
      yield* awaitFor(fake, "sendPhoto", chatId, next)
      assert.strictEqual(kie.counters.upload, 2)
      assert.strictEqual(kie.counters.tasksCreated, 1)
    }))
})

describe("editing in a group", () => {
  it.live("a photo naming the bot is edited for its sender; a photo that does not is chatter; the ask is a forced reply", () =>
    Effect.gen(function*() {
      const { app, fake, kie } = yield* withApp()
      const groupId = -1008101
      const [A, B] = [6201, 6202]
      const quiet = fake.mark()
      const chatter = fake.pushUpdate(FakeTelegram.photoMessage({
        chatId: groupId,
        userId: B,
        fileId: fake.addFile(makePng(64, 64)),
        caption: "смотрите, какой закат",
        messageId: 500
      }))
      yield* awaitInboxIdle(app, chatter)
      assert.lengthOf(fake.calls().filter((c) => c.seq > quiet && Number(c.params.chat_id) === groupId), 0)

      const before = fake.mark()
      fake.pushUpdate(FakeTelegram.photoMessage({
        chatId: groupId,
        userId: A,
        fileId: fake.addFile(makePng(64, 64)),
        caption: "@fake_bot сделай закат ярче",
        messageId: 501
      }))
      const status = yield* awaitFor(fake, "sendMessage", groupId, before)
      assert.strictEqual(status.params.text, t("ru").generating)
      assert.strictEqual((status.params.reply_parameters as { message_id: number }).message_id, 501)
      yield* awaitFor(fake, "sendPhoto", groupId, before)
      assert.strictEqual([...kie.tasks.values()][0]!.body.input.prompt, "сделай закат ярче")

      // Without a caption, but as a reply to the bot: asked with a forced reply, selective.
      const ask = fake.mark()
      fake.pushUpdate(FakeTelegram.photoMessage({
        chatId: groupId,
        userId: A,
        fileId: fake.addFile(makePng(64, 64)),
        messageId: 502,
        replyTo: { messageId: FakeTelegram.messageIdOf(status) }
      }))
      const question = yield* awaitFor(fake, "sendMessage", groupId, ask)
      assert.strictEqual(question.params.text, t("ru").askEdit)
      assert.deepInclude(question.params.reply_markup as object, { force_reply: true, selective: true })
    }))
})

describe("clear failures", () => {
  it.live("Kie's 422 on a field, an NSFW refusal and an expired picture: a plain reason and the retry button each", () =>
    Effect.gen(function*() {
      const { app, fake, kie } = yield* withApp()
      const chatId = 8401
      kie.scriptCreate({ error: 422, msg: "input.image_urls is invalid" })
      kie.scriptNextTasks(
        { steps: [{ fail: { code: "400", msg: "NSFW content detected in the input image" } }] },
        { steps: [{ fail: { code: "500", msg: "Failed to download image: file expired" } }] }
      )
      const cases = [
        t("ru").kieReasons.refusedField,
        t("ru").kieReasons.nsfw,
        t("ru").kieReasons.imageUnavailable
      ]
      for (const [i, reason] of cases.entries()) {
        const fileId = fake.addFile(makePng(64, 64))
        const before = fake.mark()
        fake.pushUpdate(FakeTelegram.photoMessage({ chatId, fileId, caption: `правка ${i}`, messageId: 40 + i }))
        const failure = yield* fake.awaitCall(
          "editMessageText",
          (c) => Number(c.params.chat_id) === chatId && String(c.params.text).startsWith("❌"),
          { after: before, timeoutMs: 20_000 }
        )
        assert.include(String(failure.params.text), reason)
        const markup = failure.params.reply_markup as { inline_keyboard: Array<Array<{ callback_data: string }>> }
        assert.match(markup.inline_keyboard[0]![0]!.callback_data, /^zimage:retry:\d+$/)
      }
      // The operator's record names the model and the field.
      const rows = yield* app.run(Effect.gen(function*() {
        const sql = yield* SqlClient
        return yield* sql<{ fail_message: string }>`
          SELECT fail_message FROM generations WHERE chat_id = ${chatId} ORDER BY id`
      }))
      assert.include(rows[0]!.fail_message, "google/nano-banana-edit")
      assert.include(rows[0]!.fail_message, "input.image_urls")
    }))
})

describe("albums", () => {
  it.live("an album with a caption: one edit of all its photos (up to the model's limit), one status, one picture", () =>
    Effect.gen(function*() {
      const { fake, kie } = yield* withApp()
      const chatId = 8301
      const files = [makePng(64, 64), makePng(80, 64), makePng(64, 80)].map((bytes) => fake.addFile(bytes))
      const before = fake.mark()
      files.forEach((fileId, i) =>
        fake.pushUpdate(FakeTelegram.photoMessage({
          chatId,
          fileId,
          messageId: 10 + i,
          mediaGroupId: "album-1",
          ...(i === 0 ? { caption: "объедини в один коллаж" } : {})
        }))
      )
      yield* awaitFor(fake, "sendPhoto", chatId, before)
      assert.strictEqual(kie.counters.tasksCreated, 1)
      const task = [...kie.tasks.values()][0]!
      assert.lengthOf(task.body.input.image_urls, 3)
      assert.strictEqual(kie.counters.upload, 3)
      const sent = fake.calls("sendMessage").filter((c) => Number(c.params.chat_id) === chatId && c.seq > before)
      assert.deepStrictEqual(sent.map((c) => c.params.text), [t("ru").generating], "one answer for the album")
    }))

  it.live("an album without a caption: one question; the answer edits all its photos", () =>
    Effect.gen(function*() {
      const { app, fake, kie } = yield* withApp()
      const chatId = 8302
      const files = [makePng(64, 64), makePng(64, 64)].map((bytes) => fake.addFile(bytes))
      const before = fake.mark()
      let last = 0
      files.forEach((fileId, i) => {
        last = fake.pushUpdate(
          FakeTelegram.photoMessage({ chatId, fileId, messageId: 20 + i, mediaGroupId: "album-2" })
        )
      })
      const ask = yield* awaitFor(fake, "sendMessage", chatId, before)
      assert.strictEqual(ask.params.text, t("ru").askEdit)
      yield* awaitInboxIdle(app, last)
      const next = fake.mark()
      fake.pushUpdate(FakeTelegram.textMessage({ chatId, text: "сделай их чёрно-белыми", messageId: 30 }))
      yield* awaitFor(fake, "sendPhoto", chatId, next)
      assert.lengthOf([...kie.tasks.values()][0]!.body.input.image_urls, 2)
      const asks = fake.calls("sendMessage").filter((c) =>
        Number(c.params.chat_id) === chatId && c.params.text === t("ru").askEdit
      )
      assert.lengthOf(asks, 1)
    }))
})

describe("editing survives a failover", () => {
  const appEnv = (fake: Fake, kie: FakeKie, databaseUrl: string) => ({
    ...fake.env,
    DATABASE_URL: databaseUrl,
    KIE_BASE_URL: kie.url,
    KIE_UPLOAD_BASE_URL: kie.url,
    KIE_POLL_INTERVAL_MS: "100",
    SHUTDOWN_TIMEOUT_MS: "300"
  })
  const statusMessages = (fake: Fake, chatId: number) =>
    fake.calls("sendMessage").filter((c) => Number(c.params.chat_id) === chatId && c.params.text === t("ru").generating)

  it.live("during the upload: the new leader uploads again (free) and creates exactly one task; one status, one picture", () =>
    Effect.gen(function*() {
      const fake = yield* FakeTelegram.make()
      const kie = yield* FakeKie.scoped({ apiKey: TEST_KIE_KEY, defaultTask: { steps: ["generating", localResult()] } })
      const databaseUrl = yield* freshDatabaseUrl
      kie.scriptUploads({ hang: true })
      const first = yield* startAppScoped(appEnv(fake, kie, databaseUrl))
      const chatId = 8201
      const fileId = fake.addFile(makePng(64, 48))
      const before = fake.mark()
      fake.pushUpdate(FakeTelegram.photoMessage({ chatId, fileId, caption: "в стиле акварели" }))
      yield* awaitFor(fake, "sendMessage", chatId, before)
      yield* kie.awaitCalls("upload", 1, 10_000)
      yield* first.stop
      yield* startApp(appEnv(fake, kie, databaseUrl))
      const delivered = yield* awaitFor(fake, "sendPhoto", chatId, before)
      assert.include(String(delivered.params.caption), "✅ Готово!")
      assert.strictEqual(kie.counters.upload, 2)
      assert.strictEqual(kie.counters.tasksCreated, 1)
      assert.lengthOf(statusMessages(fake, chatId), 1, "the photo got exactly one answer")
      assert.lengthOf(fake.calls("sendPhoto").filter((c) => Number(c.params.chat_id) === chatId), 1)
      assertNoTelegramUrl(kie)
    }))

  it.live("a photo sent while no instance leads gets exactly one answer once one does", () =>
    Effect.gen(function*() {
      const fake = yield* FakeTelegram.make()
      const kie = yield* FakeKie.scoped({ apiKey: TEST_KIE_KEY, defaultTask: { steps: ["generating", localResult()] } })
      const databaseUrl = yield* freshDatabaseUrl
      const first = yield* startAppScoped(appEnv(fake, kie, databaseUrl))
      yield* first.stop
      const chatId = 8203
      const before = fake.mark()
      fake.pushUpdate(FakeTelegram.photoMessage({ chatId, fileId: fake.addFile(makePng(64, 64)), caption: "сепия" }))
      yield* startApp(appEnv(fake, kie, databaseUrl))
      yield* awaitFor(fake, "sendPhoto", chatId, before)
      assert.lengthOf(statusMessages(fake, chatId), 1)
      assert.strictEqual(kie.counters.tasksCreated, 1)
      assert.strictEqual(kie.counters.upload, 1)
    }))

  it.live("between upload and createTask: the new leader sends the stored URL, uploads nothing, creates once", () =>
    Effect.gen(function*() {
      const fake = yield* FakeTelegram.make()
      const kie = yield* FakeKie.scoped({ apiKey: TEST_KIE_KEY, defaultTask: { steps: ["generating", localResult()] } })
      const databaseUrl = yield* freshDatabaseUrl
      // Kie takes no task on the first leader (nothing created), after the upload was stored.
      kie.scriptCreate(...Array.from({ length: 20 }, () => ({ error: 455, msg: "maintenance" })))
      const first = yield* startAppScoped(appEnv(fake, kie, databaseUrl))
      const chatId = 8202
      const fileId = fake.addFile(makePng(64, 48))
      const before = fake.mark()
      fake.pushUpdate(FakeTelegram.photoMessage({ chatId, fileId, caption: "добавь радугу" }))
      // createTask is refused with proof that nothing was created (retried, then requeued, pause):
      // the row is back to queued, its upload stored. The leader dies there.
      yield* kie.awaitCalls("createTask", 1, 10_000)
      const requeued = first.app.run(Effect.gen(function*() {
        const sql = yield* SqlClient
        const rows = yield* sql<{ status: string; input_urls: unknown }>`
          SELECT status, input_urls FROM generations WHERE chat_id = ${chatId}`
        return rows[0]?.status === "queued" && rows[0].input_urls !== null
      }))
      for (let i = 0; i < 200 && !(yield* requeued); i++) yield* Effect.sleep("50 millis")
      assert.isTrue(yield* requeued, "the row went back to queued with its upload stored")
      assert.strictEqual(kie.counters.upload, 1)
      assert.strictEqual(kie.counters.tasksCreated, 0)
      yield* first.stop
      kie.clearCreateScript()
      const second = yield* startApp(appEnv(fake, kie, databaseUrl))
      yield* awaitFor(fake, "sendPhoto", chatId, before)
      assert.strictEqual(kie.counters.upload, 1, "the stored upload is used, not repeated")
      assert.lengthOf(fake.calls("getFile"), 1)
      assert.strictEqual(kie.counters.tasksCreated, 1)
      const task = [...kie.tasks.values()][0]!
      assert.deepStrictEqual(task.body.input.image_urls, [`${kie.url}/uploads/${[...kie.uploads.keys()][0]}`])
      assert.lengthOf(statusMessages(fake, chatId), 1)
      const rows = yield* second.run(Effect.gen(function*() {
        const sql = yield* SqlClient
        return yield* sql<{ n: number }>`SELECT count(*)::int AS n FROM generations WHERE chat_id = ${chatId}`
      }))
      assert.strictEqual(rows[0]!.n, 1)
    }))
})

/** The result URL Kie reported for the first task (what the bot stored). */
const rowsResult = (kie: FakeKie) => {
  const first = [...kie.tasks.values()][0]!
  return `${kie.url}/results/result.png?task=${first.taskId}`
}
