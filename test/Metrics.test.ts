/**
 * `GET /metrics` over real HTTP, with the real routes, inbox, dispatcher,
 * leader lock, Telegram client (on FakeTelegram) and Kie client (on FakeKie):
 * counters move after real actions, the gauges are read from the database
 * at scrape time, the output parses as Prometheus text, and it carries no
 * secret and no unbounded label (no chat, update or task ids).
 */
import { assert, describe, it } from "@effect/vitest"
import { Effect, Layer } from "effect"
import { SqlClient } from "effect/sql/SqlClient"
import { TestClock } from "effect/testing"
import * as Dispatcher from "../src/dispatch/Dispatcher.ts"
import { Health, HealthRoute } from "../src/observability/Health.ts"
import { Inbox } from "../src/inbox/Inbox.ts"
import { Kie } from "../src/kie/Kie.ts"
import { KieCallbacks } from "../src/kie/KieCallback.ts"
import { KieRateBudget } from "../src/kie/KieRateBudget.ts"
import * as LeaderLock from "../src/leadership/LeaderLock.ts"
import { MetricsRefresh, MetricsRoute } from "../src/observability/Metrics.ts"
import { Telegram } from "../src/telegram/Telegram.ts"
import { WEBHOOK_PATH, WebhookRoute } from "../src/intake/TelegramWebhook.ts"
import { UpdateHandlerError } from "../src/dispatch/UpdateHandler.ts"
import { FakeKie } from "./fakes/FakeKie.ts"
import * as FakeTelegram from "./fakes/FakeTelegram.ts"
import { waitFor } from "./support/LeaderHolders.ts"
import { becomeLeader, fail, makeRecordingHandler, within } from "./support/Pipeline.ts"
import { TEST_BOT_TOKEN, TEST_KIE_KEY, TEST_WEBHOOK_SECRET, TestConfigLive } from "./support/TestConfig.ts"
import { TestDatabaseLive } from "./support/TestDatabase.ts"
import { serverUrl, TestHttpServerLive } from "./support/TestHttpServer.ts"

// ---------------------------------------------------------------------------
// A strict reader of the Prometheus text format (0.0.4)

interface Sample {
  readonly name: string
  readonly labels: Readonly<Record<string, string>>
  readonly value: number
}

const NAME = /^[a-zA-Z_:][a-zA-Z0-9_:]*$/
const SAMPLE = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$/
const LABEL = /^([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\\n]|\\[\\"n])*)"(?:,|$)/

const parseValue = (text: string): number => {
  if (text === "+Inf") return Infinity
  if (text === "-Inf") return -Infinity
  if (text === "NaN") return NaN
  assert.match(text, /^-?\d+(\.\d+)?(e[+-]?\d+)?$/, `a sample value: ${text}`)
  return Number(text)
}

const parseLabels = (text: string): Record<string, string> => {
  const labels: Record<string, string> = {}
  let rest = text
  while (rest.length > 0) {
    const match = LABEL.exec(rest)
    assert.isNotNull(match, `a label list: {${text}}`)
    assert.notProperty(labels, match![1]!, "a label appears once")
    labels[match![1]!] = match![2]!
    rest = rest.slice(match![0].length)
  }
  return labels
}

/** Parses the whole body; fails the test on any line that is not valid exposition format. */
const parsePrometheus = (body: string) => {
  assert.isTrue(body.endsWith("\n"), "ends with a newline")
  const types = new Map<string, string>()
  const samples: Array<Sample> = []
  for (const line of body.slice(0, -1).split("\n")) {
    if (line.startsWith("# HELP ")) {
      assert.match(line.split(" ")[2]!, NAME)
      continue
    }
    if (line.startsWith("# TYPE ")) {
      const [, , name, type] = line.split(" ")
      assert.match(name!, NAME)
      assert.include(["counter", "gauge", "histogram", "summary", "untyped"], type)
      assert.isFalse(types.has(name!), `one TYPE line for ${name}`)
      types.set(name!, type!)
      continue
    }
    const match = SAMPLE.exec(line)
    assert.isNotNull(match, `a sample line: ${JSON.stringify(line)}`)
    const name = match![1]!
    const family = [...types.keys()].find((f) =>
      name === f || (types.get(f) === "histogram" && [`${f}_bucket`, `${f}_sum`, `${f}_count`].includes(name))
    )
    assert.isDefined(family, `${name} comes after its TYPE line`)
    samples.push({ name, labels: parseLabels(match![2] ?? ""), value: parseValue(match![3]!) })
  }
  return { types, samples }
}

const valueOf = (samples: ReadonlyArray<Sample>, name: string, labels: Record<string, string> = {}): number => {
  const found = samples.filter((s) =>
    s.name === name && Object.keys(s.labels).length === Object.keys(labels).length &&
    Object.entries(labels).every(([k, v]) => s.labels[k] === v)
  )
  return found.length === 0 ? 0 : found[0]!.value
}

// ---------------------------------------------------------------------------

const Routes = Layer.mergeAll(HealthRoute, MetricsRoute, WebhookRoute)

const scrape = Effect.gen(function*() {
  const url = yield* serverUrl
  const response = yield* Effect.promise(() => fetch(`${url}/metrics`))
  assert.strictEqual(response.status, 200)
  assert.strictEqual(response.headers.get("content-type"), "text/plain; version=0.0.4; charset=utf-8")
  const body = yield* Effect.promise(() => response.text())
  return { body, ...parsePrometheus(body) }
})

/** Scrapes until `done` holds: waits for real work (database writes) to land, bounded. */
const scrapeUntil = (what: string, done: (samples: ReadonlyArray<Sample>) => boolean) =>
  within(
    10_000,
    Effect.gen(function*() {
      for (let i = 0; i < 500; i++) {
        const result = yield* scrape
        if (done(result.samples)) return result
        yield* Effect.promise(() => new Promise((resolve) => setTimeout(resolve, 20)))
      }
      return yield* Effect.die(new Error(`metrics never showed ${what}`))
    })
  ).pipe(Effect.catchTag("TimeoutError", () => Effect.die(new Error(`metrics never showed ${what}`))))

const CHAT = 5551234
const OK_UPDATE = 880001
const FAILING_UPDATE = 880002
const LATE_UPDATE = 880003

describe("/metrics", () => {
  it.effect(
    "counters move after real actions; gauges come from the database; valid text; no secret; bounded labels",
    () =>
      Effect.gen(function*() {
        const telegramFake = yield* FakeTelegram.make()
        const kieFake = yield* FakeKie.scoped({ apiKey: TEST_KIE_KEY })
        const config = TestConfigLive({
          ...telegramFake.env,
          KIE_BASE_URL: kieFake.url,
          PUBLIC_URL: "https://zimage.example.com",
          TELEGRAM_WEBHOOK_SECRET: TEST_WEBHOOK_SECRET,
          UPDATE_MAX_ATTEMPTS: "2",
          WORKERS: "2"
        })
        const live = TestHttpServerLive(Routes).pipe(
          Layer.provideMerge(LeaderLock.layer(Layer.empty)),
          Layer.provideMerge(Layer.mergeAll(
            Inbox.layer,
            Telegram.layer,
            Kie.layer.pipe(Layer.provideMerge(Layer.mergeAll(KieCallbacks.layer, KieRateBudget.layer)))
          )),
          Layer.provideMerge(Layer.mergeAll(Health.layer, MetricsRefresh.layer)),
          Layer.provideMerge(TestDatabaseLive),
          Layer.provideMerge(config)
        )

        yield* Effect.gen(function*() {
          const before = (yield* scrape).samples
          const telegram = yield* Telegram
          const kie = yield* Kie

          // Leadership: this lone instance takes the lock.
          const leader = yield* LeaderLock.LeaderState
          yield* waitFor(leader.active, (active) => active, "this instance to become ACTIVE")
          const leading = yield* scrapeUntil("zimage_leader_active 1", (s) => valueOf(s, "zimage_leader_active") === 1)
          assert.strictEqual(
            valueOf(leading.samples, "zimage_leader_transitions_total", { kind: "acquired" }),
            valueOf(before, "zimage_leader_transitions_total", { kind: "acquired" }) + 1
          )

          // The dispatcher, with a handler that answers one update and fails another.
          const recording = yield* makeRecordingHandler
          recording.script(OK_UPDATE, () =>
            telegram.sendMessage({ chat_id: CHAT, text: "answer" }).pipe(
              Effect.asVoid,
              Effect.mapError((error) => new UpdateHandlerError({ message: error.message }))
            ))
          recording.script(FAILING_UPDATE, () => fail("scripted failure"))
          const leadership = yield* becomeLeader(Dispatcher.layer, recording.handler)

          // Telegram delivers three webhooks: one update twice (a duplicate), one that fails.
          telegramFake.setWebhookDirectly((yield* serverUrl) + WEBHOOK_PATH, TEST_WEBHOOK_SECRET)
          for (
            const [updateId, text] of [[OK_UPDATE, "hello"], [OK_UPDATE, "hello"], [FAILING_UPDATE, "boom"]] as const
          ) {
            const delivered = telegramFake.deliveries().length
            telegramFake.pushUpdate(FakeTelegram.textMessage({ chatId: CHAT, text, updateId }))
            const delivery = yield* telegramFake.awaitDelivery((d) => d.updateId === updateId, { after: delivered })
            assert.strictEqual(delivery.status, 200)
          }
          yield* recording.awaitEnded([OK_UPDATE])
          yield* recording.awaitEvents(1, (e) => e.updateId === FAILING_UPDATE && e.phase === "failed")
          // Its retry comes after a backoff of about a second (Effect clock).
          yield* scrapeUntil(
            "the retry",
            (s) => valueOf(s, "zimage_update_retries_total") === valueOf(before, "zimage_update_retries_total") + 1
          )
          yield* TestClock.adjust("5 seconds")
          const afterUpdates = yield* scrapeUntil(
            "the dead update",
            (s) =>
              valueOf(s, "zimage_updates_processed_total", { outcome: "dead" }) ===
              valueOf(before, "zimage_updates_processed_total", { outcome: "dead" }) + 1
          )
          const after = afterUpdates.samples
          const delta = (name: string, labels: Record<string, string> = {}) =>
            valueOf(after, name, labels) - valueOf(before, name, labels)
          assert.strictEqual(
            delta("zimage_updates_received_total", { source: "webhook" }),
            2,
            "a duplicate is not counted"
          )
          assert.strictEqual(delta("zimage_updates_received_total", { source: "polling" }), 0)
          assert.strictEqual(delta("zimage_updates_processed_total", { outcome: "done" }), 1)
          assert.strictEqual(delta("zimage_updates_processed_total", { outcome: "dead" }), 1)
          assert.strictEqual(delta("zimage_update_retries_total"), 1)
          assert.strictEqual(delta("zimage_update_processing_seconds_count"), 2)
          assert.strictEqual(
            valueOf(after, "zimage_update_processing_seconds_bucket", { le: "+Inf" }),
            valueOf(after, "zimage_update_processing_seconds_count")
          )
          assert.strictEqual(delta("zimage_telegram_calls_total", { method: "sendMessage", result: "ok" }), 1)
          // The gauges are read from the database at most once a (clock) second: the next second's scrape.
          yield* TestClock.adjust("1 second")
          assert.strictEqual(valueOf((yield* scrape).samples, "zimage_queue_depth"), 0)

          // Telegram and Kie calls by method and result, including failures.
          telegramFake.blockChat(CHAT + 1)
          const blocked = yield* Effect.flip(telegram.sendMessage({ chat_id: CHAT + 1, text: "hi" }))
          assert.strictEqual(blocked._tag, "TelegramChatBlocked")
          const taskId = yield* kie.createTask({ prompt: "a red fox", aspectRatio: "1:1" })
          yield* kie.getTaskOnce(taskId)
          kieFake.scriptCreate({ error: 402, msg: "Credits insufficient" })
          const noCredits = yield* Effect.flip(kie.createTask({ prompt: "a red fox", aspectRatio: "1:1" }))
          assert.strictEqual(noCredits._tag, "KieInsufficientCredits")
          const calls = (yield* scrape).samples
          const callDelta = (name: string, labels: Record<string, string>) =>
            valueOf(calls, name, labels) - valueOf(before, name, labels)
          assert.strictEqual(
            callDelta("zimage_telegram_calls_total", { method: "sendMessage", result: "chat_blocked" }),
            1
          )
          assert.strictEqual(callDelta("zimage_kie_calls_total", { method: "createTask", result: "ok" }), 1)
          assert.strictEqual(callDelta("zimage_kie_calls_total", { method: "recordInfo", result: "ok" }), 1)
          assert.strictEqual(
            callDelta("zimage_kie_calls_total", { method: "createTask", result: "insufficient_credits" }),
            1
          )

          // Queue gauges are read from the table at scrape time: with no dispatcher
          // running, a stored update waits and ages on the clock.
          yield* leadership.release
          const delivered = telegramFake.deliveries().length
          telegramFake.pushUpdate(FakeTelegram.textMessage({ chatId: CHAT, text: "later", updateId: LATE_UPDATE }))
          yield* telegramFake.awaitDelivery((d) => d.updateId === LATE_UPDATE, { after: delivered })
          yield* TestClock.adjust("42 seconds")
          const waiting = (yield* scrape).samples
          assert.strictEqual(valueOf(waiting, "zimage_queue_depth"), 1)
          assert.strictEqual(valueOf(waiting, "zimage_queue_oldest_pending_seconds"), 42)

          // Nothing secret, nothing unbounded.
          const { body, samples } = yield* scrape
          for (const secret of [TEST_BOT_TOKEN, TEST_BOT_TOKEN.split(":")[1]!, TEST_KIE_KEY, TEST_WEBHOOK_SECRET]) {
            assert.notInclude(body, secret)
          }
          const labelNames = new Set(samples.flatMap((s) => Object.keys(s.labels)))
          for (const name of labelNames) {
            assert.include(["source", "outcome", "method", "result", "kind", "reason", "le"], name)
          }
          for (const sample of samples) {
            for (const [name, value] of Object.entries(sample.labels)) {
              if (name === "le") assert.match(value, /^(\+Inf|\d+(\.\d+)?)$/)
              else assert.match(value, /^[A-Za-z_]{1,40}$/, `${sample.name}{${name}="${value}"} has no ids in it`)
            }
          }
          assert.isFalse(body.includes(String(CHAT)) || body.includes(taskId) || body.includes(String(OK_UPDATE)))
        }).pipe(
          // The leadership (dispatcher) ends before the services it uses, even when an assertion fails.
          Effect.scoped,
          Effect.provide(live)
        )
      }),
    { timeout: 60_000 }
  )
})

describe("/health and /metrics read the database at most once a second", () => {
  const Live = TestHttpServerLive(Layer.mergeAll(HealthRoute, MetricsRoute)).pipe(
    Layer.provideMerge(Inbox.layer),
    Layer.provideMerge(Layer.mergeAll(Health.layer, MetricsRefresh.layer)),
    Layer.provideMerge(TestDatabaseLive),
    Layer.provideMerge(TestConfigLive())
  )

  /** How many times a probe counting in `sequence` has run: read from the database itself. */
  const reads = (sequence: string) =>
    Effect.gen(function*() {
      const sql = yield* SqlClient
      const [row] = yield* sql<{ n: string }>`
        SELECT CASE WHEN is_called THEN last_value ELSE 0 END::text AS n FROM ${sql(sequence)}`
      return Number(row!.n)
    })

  const get = (path: string) =>
    Effect.gen(function*() {
      const url = yield* serverUrl
      return yield* Effect.promise(() =>
        fetch(url + path).then(async (r) => ({ status: r.status, body: await r.text() }))
      )
    })

  it.effect(
    "50 calls within one clock second: one database read each; the next second reads again; live fields stay live",
    () =>
      Effect.gen(function*() {
        const sql = yield* SqlClient
        const health = yield* Health
        const metrics = yield* MetricsRefresh
        yield* sql`CREATE SEQUENCE health_reads`
        yield* sql`CREATE SEQUENCE metrics_reads`
        // Probes that count their runs in the database, next to the inbox's own.
        yield* health.register(sql`SELECT nextval('health_reads')`.pipe(Effect.as({ probe: "database" }), Effect.orDie))
        yield* metrics.register(sql`SELECT nextval('metrics_reads')`.pipe(Effect.asVoid, Effect.orDie))
        let liveReads = 0
        yield* health.registerLive(Effect.sync(() => ({ live_reads: ++liveReads })))

        const answers = yield* Effect.all(
          Array.from({ length: 50 }, (_, i) => get(i % 2 === 0 ? "/health" : "/metrics")),
          { concurrency: 10 }
        )
        for (let i = 0; i < 50; i += 2) yield* get("/health").pipe(Effect.andThen(get("/metrics")))
        assert.isTrue(answers.every((answer) => answer.status === 200))
        assert.strictEqual(yield* reads("health_reads"), 1)
        assert.strictEqual(yield* reads("metrics_reads"), 1)
        assert.strictEqual(liveReads, 50, "the leadership-like probe is read for every answer")
        const last = JSON.parse((yield* get("/health")).body)
        assert.deepInclude(last, { status: "ok", probe: "database", db: "ok", queue_depth: 0, live_reads: 51 })

        yield* TestClock.adjust("1 second")
        yield* get("/health")
        yield* get("/metrics")
        yield* get("/health")
        assert.strictEqual(yield* reads("health_reads"), 2)
        assert.strictEqual(yield* reads("metrics_reads"), 2)
        // In-process callers can still read everything now.
        yield* health.report
        yield* metrics.refresh
        assert.strictEqual(yield* reads("health_reads"), 3)
        assert.strictEqual(yield* reads("metrics_reads"), 3)
      }).pipe(Effect.provide(Live)),
    { timeout: 60_000 }
  )
})
