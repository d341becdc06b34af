/**
 * A paid generation survives `kill -9` of the instance running it: two real
 * OS processes of the service (`src/main.ts`) on one database, the fake Bot
 * API and the fake Kie on loopback. The user goes through the chat flow; the
 * ACTIVE instance sends createTask; while Kie still reports `generating` it is
 * killed; the standby takes over, polls the stored task id and delivers the
 * photo. Live clock (real processes); waits are event-driven and bounded.
 */
import { assert, describe, it } from "@effect/vitest"
import { Effect } from "effect"
import { t } from "../src/texts/Messages.ts"
import { FakeKie, localResult } from "./fakes/FakeKie.ts"
import * as FakeTelegram from "./fakes/FakeTelegram.ts"
import { getJson, type ServiceProcess, startService } from "./support/ServiceProcess.ts"
import { TEST_KIE_KEY } from "./support/TestConfig.ts"
import { freshDatabaseUrl } from "./support/TestDatabase.ts"

const ACTIVE_LINE = "[LOCK] ✅ ACTIVE MODE: PostgreSQL advisory lock acquired"

const start = (env: Record<string, string>, name: string, expect: "active" | "passive") =>
  Effect.promise(async () => {
    const service = startService({ ...env, INSTANCE_ID: name })
    await service.waitForLine((l) => l.includes(expect === "active" ? ACTIVE_LINE : "PASSIVE_WAIT"))
    return { service, port: await service.port() }
  })

const messageId = FakeTelegram.messageIdOf

describe("GenerationEngine across processes", () => {
  it.live(
    "kill -9 of the ACTIVE instance mid-generation: the standby delivers the photo once, one createTask",
    () =>
      Effect.gen(function*() {
        const telegram = yield* FakeTelegram.make()
        const kie = yield* FakeKie.scoped({ apiKey: TEST_KIE_KEY, defaultTask: { steps: ["generating"] } })
        const databaseUrl = yield* freshDatabaseUrl
        const env = {
          ...telegram.env,
          KIE_API_KEY: TEST_KIE_KEY,
          KIE_BASE_URL: kie.url,
          DATABASE_URL: databaseUrl,
          PORT: "0",
          HOST: "127.0.0.1",
          LOG_LEVEL: "info",
          KIE_POLL_INTERVAL_MS: "300"
        }
        const first = yield* start(env, "first", "active")
        const second = yield* start(env, "second", "passive")
        const processes: Array<ServiceProcess> = [first.service, second.service]
        yield* Effect.addFinalizer(() => Effect.sync(() => processes.forEach((p) => p.kill("SIGKILL"))))

        // The chat flow, as a user would go through it.
        const chatId = 7001
        const reply = (update: Record<string, unknown>, method = "sendMessage") =>
          Effect.gen(function*() {
            const mark = telegram.mark()
            telegram.pushUpdate(update)
            return yield* telegram.awaitCall(method, (c) => c.params.chat_id === chatId, {
              after: mark,
              timeoutMs: 15_000
            })
          })
        const welcome = yield* reply(FakeTelegram.textMessage({ chatId, text: "/start" }))
        yield* reply(FakeTelegram.callbackQuery({ chatId, data: "zimage:start", messageId: messageId(welcome) }))
        const ratios = yield* reply(FakeTelegram.textMessage({ chatId, text: "кот в космосе" }))
        const status = yield* reply(
          FakeTelegram.callbackQuery({ chatId, data: "zimage:ratio:1:1", messageId: messageId(ratios) })
        )
        assert.strictEqual(status.params.text, t("ru").generating)

        // The ACTIVE instance sent createTask and is polling; Kie says "generating".
        yield* Effect.promise(() => kie.waitForCalls("createTask", 1, 15_000))
        yield* Effect.promise(() => kie.waitForCalls("recordInfo", 1, 15_000))
        const taskId = [...kie.tasks.keys()][0]!
        const passiveHealth = yield* Effect.promise(() => getJson(second.port, "/health"))
        assert.deepInclude(passiveHealth.body, { active: false, inflight_generations: 1, generation_engine: "stopped" })

        first.service.kill("SIGKILL")
        assert.strictEqual(yield* Effect.promise(() => first.service.exited), "SIGKILL")
        yield* Effect.promise(() => second.service.waitForLine((l) => l.includes(ACTIVE_LINE), 15_000))
        yield* Effect.promise(() =>
          second.service.waitForLine(
            (l) => l.includes("[GEN] engine started: resuming 0 queued, 0 submitting, 1 submitted"),
            15_000
          )
        )
        // Only now does Kie finish the task.
        kie.setTask(taskId, { steps: [localResult()] })

        const photo = yield* telegram.awaitCall("sendPhoto", (c) => c.params.chat_id === chatId, { timeoutMs: 20_000 })
        assert.include(String(photo.params.caption), "✅ Готово!")
        yield* Effect.promise(() =>
          second.service.waitForLine((l) => l.includes("succeeded → delivered") && l.includes(taskId), 20_000)
        )
        yield* telegram.awaitCall(
          "deleteMessage",
          (c) => c.params.chat_id === chatId && c.params.message_id === messageId(status),
          { timeoutMs: 20_000 }
        )
        // /health reads the database at most once a second, so its count may lag the delivery by that much.
        const health = yield* Effect.promise(async () => {
          const until = Date.now() + 5_000
          for (;;) {
            const answer = await getJson(second.port, "/health")
            if (answer.body.inflight_generations === 0 || Date.now() > until) return answer
            await new Promise((resolve) => setTimeout(resolve, 100))
          }
        })
        assert.deepInclude(health.body, { active: true, inflight_generations: 0, generation_engine: "running" })

        assert.strictEqual(kie.counters.createTask, 1, "never a second createTask")
        assert.lengthOf(telegram.messages(chatId).filter((m) => m.kind === "photo"), 1, "the photo arrived once")
        assert.lengthOf(telegram.calls("sendPhoto"), 1)
        assert.isUndefined(
          telegram.messages(chatId).find((m) => m.messageId === messageId(status)),
          "the status message is removed"
        )
        second.service.kill("SIGTERM")
        assert.strictEqual(yield* Effect.promise(() => second.service.exited), 0)
      }),
    90_000
  )
})
