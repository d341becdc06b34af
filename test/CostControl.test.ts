/**
 * Cost control and retention: the per-user and global daily limits (race-free
 * under concurrent chats), the allowlist of a private bot, and the retention
 * pass that deletes old finished generations and chat sessions.
 *
 * The limits and retention are tested on the `generations` table of a real
 * database with time from a TestClock; what users see, the `[BUDGET]` line
 * and the metrics, on the whole app in-process with the fake Bot API.
 */
import { assert, describe, it, layer } from "@effect/vitest"
import { DateTime, Duration, Effect, Layer, Option } from "effect"
import { SqlClient } from "effect/sql/SqlClient"
import { TestClock } from "effect/testing"
import * as Retention from "../src/chat/Retention.ts"
import { ChatSessions } from "../src/chat/ChatSessions.ts"
import { Generations, type Limits } from "../src/generations/Generations.ts"
import { t } from "../src/texts/Messages.ts"
import * as FakeTelegram from "./fakes/FakeTelegram.ts"
import { makeLogCapture } from "./support/LogCapture.ts"
import { awaitInboxIdle, startApp, type TestApp } from "./support/TestApp.ts"
import { loadConfig, TestConfigLive, testConfig } from "./support/TestConfig.ts"
import { freshDatabaseUrl, TestDatabaseLive } from "./support/TestDatabase.ts"

const input = (userId: number, sourceUpdateId: number) => ({
  userId,
  chatId: userId,
  lang: "ru" as const,
  prompt: "кот",
  aspectRatio: "1:1" as const,
  sourceUpdateId
})

/** `effect` on a TestClock of its own, set to `at`: big jumps must not drive the pool's timers. */
const at = <A, E, R>(when: string, effect: Effect.Effect<A, E, R>) =>
  Effect.gen(function*() {
    yield* TestClock.setTime(Date.parse(when))
    return yield* effect
  }).pipe(Effect.provide(TestClock.layer()))

const refusalKind = <A>(effect: Effect.Effect<A, unknown>) =>
  effect.pipe(
    Effect.map(() => "created"),
    Effect.catch((error) =>
      Effect.succeed(
        (error as { _tag?: string; kind?: string })._tag === "GenerationLimitReached"
          ? (error as { kind: string }).kind
          : `unexpected ${String(error)}`
      )
    )
  )

const testEnv = {
  TELEGRAM_BOT_TOKEN: "1234567890:AAFakeTokenForTestsOnly_abcdefghijkl",
  KIE_API_KEY: "kie-test-key"
}

describe("configuration", () => {
  it.effect("defaults: 30 per user, 1000 for everyone, no allowlist, 30 days of retention", () =>
    Effect.gen(function*() {
      const config = testConfig()
      assert.strictEqual(config.dailyGenerationLimit, 30)
      assert.strictEqual(config.globalDailyGenerationLimit, 1000)
      assert.isTrue(Option.isNone(config.allowedUserIds))
      assert.strictEqual(Duration.toHours(config.generationRetention), 30 * 24)
      const listed = testConfig({ ALLOWED_USER_IDS: "11, 22 33", GLOBAL_DAILY_GENERATION_LIMIT: "0" })
      assert.deepStrictEqual(Option.map(listed.allowedUserIds, (ids) => [...ids]), Option.some([11, 22, 33]))
      assert.strictEqual(listed.globalDailyGenerationLimit, 0)
      for (const [name, value] of [["ALLOWED_USER_IDS", "11,abc"], ["GENERATION_RETENTION_DAYS", "0"]]) {
        const error = yield* Effect.flip(loadConfig({ ...testEnv, [name!]: value! }))
        assert.strictEqual(error.variable, name)
        assert.notInclude(error.message, "abc")
      }
    }))
})

const Live = Layer.mergeAll(Generations.layer, ChatSessions.layer).pipe(
  Layer.provideMerge(TestDatabaseLive),
  Layer.provideMerge(TestConfigLive({ GENERATION_RETENTION_DAYS: "30" }))
)

describe("the global daily budget", () => {
  layer(Live, { timeout: "60 seconds" })((it) => {
    const budget: Limits = { maxActivePerUser: 1, dailyLimit: 0, globalDailyLimit: 3, timeout: Duration.minutes(5) }

    it.effect("refuses the (N+1)-th generation across users; failed ones do not count; a new UTC day starts afresh", () =>
      Effect.gen(function*() {
        const generations = yield* Generations
        const created = yield* at(
          "2026-03-01T10:00:00Z",
          Effect.forEach([101, 102, 103], (user) => generations.create(input(user, user), budget))
        )
        assert.deepStrictEqual(created.map((c) => c.created), [true, true, true])
        // A fourth user, within their own limits, meets the budget of all users together.
        const fourth = yield* at("2026-03-01T23:59:00Z", Effect.flip(generations.create(input(104, 104), budget)))
        if (fourth._tag !== "GenerationLimitReached") return assert.fail(`expected the budget, got ${fourth._tag}`)
        assert.strictEqual(fourth.kind, "global")
        assert.strictEqual(fourth.limit, 3)
        // Without a budget the same request passes the user's own limits: the budget alone refused it.
        assert.strictEqual(
          yield* at(
            "2026-03-01T23:59:00Z",
            refusalKind(generations.create(input(104, 1104), { ...budget, globalDailyLimit: 0 }))
          ),
          "created"
        )
        yield* (yield* SqlClient)`DELETE FROM generations WHERE source_update_id = 1104`

        // A failed generation frees its place in the budget.
        assert.isTrue(yield* generations.markFailed(created[0]!.generation.id, "test", "failed"))
        assert.strictEqual(
          yield* at("2026-03-01T23:59:00Z", refusalKind(generations.create(input(104, 104), budget))),
          "created"
        )
        assert.strictEqual(
          yield* at("2026-03-01T23:59:00Z", refusalKind(generations.create(input(105, 105), budget))),
          "global"
        )
        // The next UTC day counts from zero.
        assert.strictEqual(
          yield* at("2026-03-02T00:00:00Z", refusalKind(generations.create(input(105, 105), budget))),
          "created"
        )
        assert.strictEqual(yield* generations.countSince(DateTime.makeUnsafe("2026-03-01T00:00:00Z")), 4)
        assert.strictEqual(yield* generations.countSince(DateTime.makeUnsafe("2026-03-02T00:00:00Z")), 1)
      }))

    it.effect("concurrent requests of many users never exceed the budget", () =>
      Effect.gen(function*() {
        const generations = yield* Generations
        const users = Array.from({ length: 30 }, (_, i) => 200 + i)
        const outcomes = yield* at(
          "2026-04-01T12:00:00Z",
          Effect.forEach(
            users,
            (user) => refusalKind(generations.create(input(user, user), { ...budget, globalDailyLimit: 7 })),
            {
              concurrency: "unbounded"
            }
          )
        )
        assert.strictEqual(outcomes.filter((o) => o === "created").length, 7)
        assert.strictEqual(outcomes.filter((o) => o === "global").length, 23)
        assert.strictEqual(yield* generations.countSince(DateTime.makeUnsafe("2026-04-01T00:00:00Z")), 7)
      }))
  })
})

describe("retention", () => {
  // A database of its own: the pass deletes every old finished row in it.
  layer(Live, { timeout: "60 seconds" })((it) => {
    it.effect("retention deletes old finished generations and old sessions, keeps unfinished and recent ones", () =>
      Effect.gen(function*() {
        const sql = yield* SqlClient
        const generations = yield* Generations
        const sessions = yield* ChatSessions
        const wide: Limits = { maxActivePerUser: 100, dailyLimit: 0, timeout: Duration.minutes(5) }
        const make = (when: string, user: number, update: number, status: string) =>
          at(
            when,
            Effect.gen(function*() {
              const { generation } = yield* generations.create(input(user, update), wide)
              if (status !== "queued") {
                yield* sql`UPDATE generations SET status = ${status}, kie_task_id = ${`task-${update}`},
                  result_urls = '["https://example.com/r.png"]'::jsonb WHERE id = ${generation.id}::bigint`
              }
              return generation.id
            })
          )
        const oldDelivered = yield* make("2027-01-01T10:00:00Z", 301, 3001, "delivered")
        const oldFailed = yield* make("2027-01-01T11:00:00Z", 301, 3002, "failed")
        const oldQueued = yield* make("2027-01-01T12:00:00Z", 302, 3003, "queued")
        const oldSubmitted = yield* make("2027-01-01T12:00:00Z", 303, 3004, "submitted")
        const recent = yield* make("2027-01-20T12:00:00Z", 301, 3005, "delivered")
        const today = yield* make("2027-02-05T00:10:00Z", 301, 3006, "delivered")
        // A backlog larger than one batch: several batches in one pass.
        yield* sql`
          INSERT INTO generations (user_id, chat_id, lang, prompt, aspect_ratio, status, kie_task_id,
            created_at, deadline_at, updated_at)
          SELECT 400, 400, 'ru', 'backlog', '1:1', 'delivered', 'backlog-' || n,
            '2026-12-01T00:00:00Z', '2026-12-01T00:05:00Z', '2026-12-01T00:05:00Z'
          FROM generate_series(1, ${Retention.RETENTION_BATCH * 2 + 17}) AS n`
        const session = (chatId: number, when: string) =>
          at(when, sessions.save(chatId, chatId, { state: { _tag: "WaitingPrompt" }, lang: "ru", lastUpdateId: 1 }))
        yield* session(301, "2027-01-01T10:00:00Z")
        yield* session(302, "2027-01-30T10:00:00Z")

        const report = yield* at("2027-02-05T12:00:00Z", Effect.flatMap(Retention.make, (r) => r.pass))
        assert.deepStrictEqual(report, { generations: 2 + Retention.RETENTION_BATCH * 2 + 17, sessions: 1 })
        const left = yield* sql<
          { id: string }
        >`SELECT id::text AS id FROM generations WHERE user_id IN (301, 302, 303, 400)`
        assert.sameMembers(left.map((r) => r.id), [oldQueued, oldSubmitted, recent, today])
        assert.notInclude(left.map((r) => r.id), oldDelivered)
        assert.notInclude(left.map((r) => r.id), oldFailed)
        assert.isTrue(Option.isNone(yield* sessions.get(301, 301)))
        assert.isTrue(Option.isSome(yield* sessions.get(302, 302)))
        // Today's count, which the daily limits read, did not drop.
        assert.strictEqual(yield* generations.countSince(DateTime.makeUnsafe("2027-02-05T00:00:00Z")), 1)
        // A second pass finds nothing more.
        assert.deepStrictEqual(
          yield* at("2027-02-05T13:00:00Z", Effect.flatMap(Retention.make, (r) => r.pass)),
          { generations: 0, sessions: 0 }
        )
      }))
  })
})

// ---------------------------------------------------------------------------
// The whole app: what users see, the operator's line, the metrics

type Fake = FakeTelegram.FakeTelegramShape

const sendAndAwait = (fake: Fake, update: Record<string, unknown>, method: string, chatId: number) =>
  Effect.gen(function*() {
    const after = fake.mark()
    fake.pushUpdate(update)
    return yield* fake.awaitCall(method, (c) => Number(c.params.chat_id) === chatId, { after, timeoutMs: 10_000 })
  })

/** /start → button → prompt → ratio: the bot's answer to the ratio press. */
const askForOne = (fake: Fake, chatId: number) =>
  Effect.gen(function*() {
    const welcome = yield* sendAndAwait(
      fake,
      FakeTelegram.textMessage({ chatId, text: "/start" }),
      "sendMessage",
      chatId
    )
    const start = FakeTelegram.callbackQuery({
      chatId,
      data: "zimage:start",
      messageId: FakeTelegram.messageIdOf(welcome)
    })
    yield* sendAndAwait(fake, start, "sendMessage", chatId)
    const keyboard = yield* sendAndAwait(fake, FakeTelegram.textMessage({ chatId, text: "кот" }), "sendMessage", chatId)
    const ratio = FakeTelegram.callbackQuery({
      chatId,
      data: "zimage:ratio:1:1",
      messageId: FakeTelegram.messageIdOf(keyboard)
    })
    return yield* sendAndAwait(fake, ratio, "sendMessage", chatId)
  })

/** A finished generation of `user` made today, straight into the table; its id. */
const finishedToday = (app: TestApp, user: number, status: "delivered" | "failed") =>
  app.run(Effect.gen(function*() {
    const sql = yield* SqlClient
    const [row] = yield* sql<{ id: string }>`
      INSERT INTO generations (user_id, chat_id, lang, prompt, aspect_ratio, status, kie_task_id,
        created_at, deadline_at, updated_at)
      VALUES (${user}, ${user}, 'ru', 'кот', '1:1', ${status}, ${`seed-${user}-${Math.random()}`},
        now(), now() + interval '5 minutes', now())
      RETURNING id::text AS id`
    return row!.id
  }))

const generationCount = (app: TestApp) =>
  app.run(Effect.gen(function*() {
    const sql = yield* SqlClient
    const [row] = yield* sql<{ n: bigint }>`SELECT count(*) AS n FROM generations`
    return Number(row!.n)
  }))

/** The value of a series in the app's `/metrics` (the one with `label`, if given; 0 when absent). */
const scraped = (app: TestApp, series: string, label?: string) =>
  Effect.promise(() => fetch(`http://127.0.0.1:${app.port}/metrics`).then((r) => r.text())).pipe(
    Effect.map((body) => {
      const line = body.split("\n").find((l) =>
        label === undefined ? l.startsWith(`${series} `) : l.startsWith(`${series}{`) && l.includes(label)
      )
      return line === undefined ? 0 : Number(line.split(" ").at(-1))
    })
  )

describe("cost control in the chat", () => {
  it.live("the per-user daily limit of 30 applies by default", () =>
    Effect.gen(function*() {
      const fake = yield* FakeTelegram.make()
      const app = yield* startApp({ ...fake.env, DATABASE_URL: yield* freshDatabaseUrl })
      const chatId = 6001
      for (let i = 0; i < 30; i++) yield* finishedToday(app, chatId, "delivered")
      const answer = yield* askForOne(fake, chatId)
      assert.strictEqual(answer.params.text, t("ru").dailyLimit(30))
      assert.strictEqual(yield* generationCount(app), 30)
    }), { timeout: 60_000 })

  it.live(
    "past the global budget everyone is told, once in the log; a ratio, again and retry all count",
    () =>
      Effect.gen(function*() {
        const fake = yield* FakeTelegram.make()
        const logs = makeLogCapture()
        const app = yield* startApp({
          ...fake.env,
          DATABASE_URL: yield* freshDatabaseUrl,
          GLOBAL_DAILY_GENERATION_LIMIT: "2"
        }).pipe(Effect.provide(logs.layer))
        const [again, retry, fresh, other] = [6101, 6102, 6103, 6104]
        const delivered = yield* finishedToday(app, again, "delivered")
        yield* finishedToday(app, other, "delivered")
        const failed = yield* finishedToday(app, retry, "failed") // failed: not counted, so the budget is exactly full
        const refusedBefore = yield* scraped(app, "zimage_generations_refused_total", `reason="global"`)

        const byRatio = yield* askForOne(fake, fresh)
        assert.strictEqual(byRatio.params.text, t("ru").globalLimit)
        const byAgain = yield* sendAndAwait(
          fake,
          FakeTelegram.callbackQuery({ chatId: again, data: `zimage:again:${delivered}`, languageCode: "en" }),
          "sendMessage",
          again
        )
        assert.strictEqual(byAgain.params.text, t("en").globalLimit)
        const byRetry = yield* sendAndAwait(
          fake,
          FakeTelegram.callbackQuery({ chatId: retry, data: `zimage:retry:${failed}` }),
          "sendMessage",
          retry
        )
        assert.strictEqual(byRetry.params.text, t("ru").globalLimit)

        assert.strictEqual(yield* generationCount(app), 3)
        const alarms = logs.lines().filter((l) => l.message.startsWith("[BUDGET]"))
        assert.lengthOf(alarms, 1)
        assert.strictEqual(alarms[0]!.level, "ERROR")
        assert.strictEqual(
          (yield* scraped(app, "zimage_generations_refused_total", `reason="global"`)) - refusedBefore,
          3
        )
        assert.strictEqual(yield* scraped(app, "zimage_generations_today"), 2)
      }),
    { timeout: 60_000 }
  )

  it.live(
    "a private bot answers others with one short text and serves the users on its list",
    () =>
      Effect.gen(function*() {
        const fake = yield* FakeTelegram.make()
        const app = yield* startApp({
          ...fake.env,
          DATABASE_URL: yield* freshDatabaseUrl,
          ALLOWED_USER_IDS: "6201,6209"
        })
        const [listed, stranger] = [6201, 6202]
        const refusedBefore = yield* scraped(app, "zimage_access_refused_total")

        const toStranger = yield* sendAndAwait(
          fake,
          FakeTelegram.textMessage({ chatId: stranger, text: "/start", languageCode: "en" }),
          "sendMessage",
          stranger
        )
        assert.strictEqual(toStranger.params.text, t("en").privateBot)
        const queryId = "private-cbq-1"
        fake.pushUpdate(FakeTelegram.callbackQuery({ chatId: stranger, data: "zimage:start", id: queryId }))
        const answered = yield* fake.awaitCall("answerCallbackQuery", (c) => c.params.callback_query_id === queryId, {
          timeoutMs: 10_000
        })
        assert.strictEqual(answered.params.text, t("ru").privateBot)
        // In a group, a stranger's chatter gets no answer at all.
        const group = -6300
        const last = fake.pushUpdate(FakeTelegram.textMessage({ chatId: group, userId: stranger, text: "привет" }))
        yield* awaitInboxIdle(app, last)
        assert.lengthOf(fake.calls("sendMessage").filter((c) => Number(c.params.chat_id) === group), 0)
        // Nothing about strangers is stored.
        const stored = yield* app.run(Effect.gen(function*() {
          const sql = yield* SqlClient
          return yield* sql<
            { n: bigint }
          >`SELECT count(*) AS n FROM chat_sessions WHERE chat_id IN (${stranger}, ${group})`
        }))
        assert.strictEqual(Number(stored[0]!.n), 0)
        assert.strictEqual((yield* scraped(app, "zimage_access_refused_total")) - refusedBefore, 3)

        const welcome = yield* sendAndAwait(
          fake,
          FakeTelegram.textMessage({ chatId: listed, text: "/start" }),
          "sendMessage",
          listed
        )
        assert.strictEqual(welcome.params.text, t("ru").welcome)
        const answer = yield* askForOne(fake, listed)
        assert.strictEqual(answer.params.text, t("ru").generating)
      }),
    { timeout: 60_000 }
  )
})
