/**
 * The flood drill: one real service process (`src/main.ts`, production
 * settings) in webhook mode behind the load balancer, the fake Bot API with
 * Telegram's per-chat flood control (stricter still for the flooder's chat,
 * so Telegram does answer it 429), and the fake Kie.
 *
 * One chat sends `floodUpdates` messages as fast as the webhook takes them
 * (one after another, as Telegram delivers a chat's updates); meanwhile
 * `otherChats` other users each go through `/start`, the button, a prompt
 * and a ratio to their picture. It reports how long the others waited for
 * their `/start` answer and what the flooder cost (messages sent to it, rows
 * stored), and checks:
 *
 * - every other user got the welcome and the picture;
 * - the others' `/start` p99 is within `startP99GoalMs`;
 * - the flooder got one "too many messages" notice and few other messages,
 *   and once the flood has passed its `/start` is answered as usual;
 * - few of the flooder's updates were stored, the rest counted as dropped;
 * - no update is dead or left unfinished.
 *
 * `npm run chaos` runs it in full after the fault drill; `npm test` runs a
 * small one (test/FloodDrill.test.ts). Everything is on 127.0.0.1; every wait
 * is bounded.
 */
import { PgClient } from "@effect/sql-pg"
import { Effect, Layer, Redacted } from "effect"
import { SqlClient } from "effect/sql/SqlClient"
import * as fs from "node:fs"
import * as path from "node:path"
import { performance } from "node:perf_hooks"
import { t } from "../../src/texts/Messages.ts"
import { FakeKie, localResult } from "../fakes/FakeKie.ts"
import * as FakeTelegram from "../fakes/FakeTelegram.ts"
import { percentiles } from "./Drill.ts"
import { startLoadBalancer } from "./LoadBalancer.ts"
import { getJson, startService } from "./ServiceProcess.ts"
import { TEST_KIE_KEY, TEST_WEBHOOK_SECRET } from "./TestConfig.ts"

export interface FloodDrillOptions {
  /** An empty database the instance may migrate and fill. */
  readonly databaseUrl: string
  /** Messages the flooder sends. */
  readonly floodUpdates: number
  /** Users who each go through `/start` to a picture while the flood goes on. */
  readonly otherChats: number
  /** The others' `/start` p99 the drill checks for (ms). */
  readonly startP99GoalMs: number
  /** Telegram's `retry_after` for the flooder's chat once it is over the limit. */
  readonly floodRetryAfterSeconds: number
  /**
   * How long after the flood its user sends `/start` again, which must be
   * answered: the instance's FLOOD_NOTICE_RATE window and a little more.
   */
  readonly afterFloodMs: number
  /** Bound on the whole run. */
  readonly timeoutMs: number
  /** Extra environment for the instance. */
  readonly env?: Readonly<Record<string, string>>
  readonly progress?: (line: string) => void
  /** Where to write the instance's log lines (kept for a post-mortem). */
  readonly logDir?: string
}

export interface FloodDrillReport {
  /** How long the other users waited for the answer to `/start` (ms). */
  readonly startWait: { readonly p50: number; readonly p99: number; readonly max: number }
  /** How long the other users waited for any answer, the picture aside (ms). */
  readonly stepWait: { readonly p50: number; readonly p99: number; readonly max: number }
  readonly welcomed: number
  readonly photos: number
  readonly flooder: {
    readonly sent: number
    /** Bot API calls to its chat that Telegram carried out. */
    readonly messagesDelivered: number
    /** Bot API calls to its chat that Telegram answered 429. */
    readonly answered429: number
    readonly notices: number
    readonly rowsStored: number
    readonly droppedMetric: number
    readonly floodSeconds: number
  }
  readonly deadUpdates: number
  readonly openUpdates: number
  readonly durationMs: number
  readonly checks: ReadonlyArray<{ readonly name: string; readonly ok: boolean; readonly detail: string }>
}

const FLOODER = 600_001
const OTHERS_BASE = 610_000
const ru = t("ru")
const SEND_METHODS = new Set(["sendMessage", "sendPhoto", "sendDocument", "editMessageText", "editMessageReplyMarkup"])

const pause = (ms: number) => Effect.promise(() => new Promise((resolve) => setTimeout(resolve, ms)))

/** The `zimage_updates_dropped_total{reason="flood"}` sample of a Prometheus page. */
const droppedOf = (metrics: string) => {
  const line = metrics.split("\n").find((l) =>
    l.startsWith("zimage_updates_dropped_total{") && l.includes(`reason="flood"`)
  )
  return line === undefined ? 0 : Number(line.split(" ").at(-1))
}

export const runFloodDrill = (options: FloodDrillOptions) =>
  Effect.gen(function*() {
    const started = performance.now()
    const say = options.progress ?? (() => {})
    const deadline = started + options.timeoutMs
    const remaining = () => Math.max(1_000, deadline - performance.now())

    const telegram = yield* FakeTelegram.make({
      latencyMs: 10,
      floodControl: {
        perSecond: 3,
        retryAfter: options.floodRetryAfterSeconds,
        perSecondFor: (chatId) => (chatId === FLOODER ? 1 : undefined)
      }
    })
    const kie = yield* FakeKie.scoped({
      apiKey: TEST_KIE_KEY,
      defaultTask: { steps: ["generating", localResult()] }
    })
    const balancer = yield* startLoadBalancer
    const service = startService({
      ...telegram.env,
      KIE_API_KEY: TEST_KIE_KEY,
      KIE_BASE_URL: kie.url,
      PUBLIC_URL: balancer.url,
      TELEGRAM_WEBHOOK_SECRET: TEST_WEBHOOK_SECRET,
      DATABASE_URL: options.databaseUrl,
      PORT: "0",
      HOST: "127.0.0.1",
      LOG_LEVEL: "info",
      LOG_FORMAT: "json",
      KIE_POLL_INTERVAL_MS: "300",
      INSTANCE_ID: "flood-drill",
      ...options.env
    })
    yield* Effect.addFinalizer(() => Effect.sync(() => service.killAll()))
    const port = yield* Effect.promise(() => service.port())
    balancer.setBackends([port])
    yield* Effect.promise(() => service.waitForLine((l) => l.includes("[LOCK] ✅ ACTIVE MODE"), 60_000))
    yield* telegram.awaitCall("setWebhook", undefined, { timeoutMs: 30_000 }).pipe(Effect.orDie)
    say(`instance ACTIVE on port ${port}`)

    // -- traffic: straight to the webhook, as Telegram delivers it ------------------
    let nextUpdateId = 900_000_000
    const post = (update: Record<string, unknown>) =>
      Effect.promise(() =>
        fetch(`${balancer.url}/telegram/webhook`, {
          method: "POST",
          headers: { "content-type": "application/json", "x-telegram-bot-api-secret-token": TEST_WEBHOOK_SECRET },
          body: JSON.stringify({ ...update, update_id: ++nextUpdateId })
        }).then(async (response) => {
          await response.arrayBuffer()
          return response.status
        }, () => 0)
      )

    let floodDone = 0
    let floodSeconds = 0
    let floodEndedAt = 0
    const flood = Effect.gen(function*() {
      const begun = performance.now()
      for (let i = 0; i < options.floodUpdates && performance.now() < deadline; i++) {
        yield* post(FakeTelegram.textMessage({ chatId: FLOODER, text: i % 10 === 0 ? "/start" : `spam ${i}` }))
        floodDone++
      }
      floodEndedAt = performance.now()
      floodSeconds = (floodEndedAt - begun) / 1000
      say(`flooder sent ${floodDone} updates in ${floodSeconds.toFixed(1)} s`)
    })

    const startWaits: Array<number> = []
    const stepWaits: Array<number> = []
    const failures: Array<string> = []
    let photos = 0
    const chatOf = (call: FakeTelegram.RecordedCall) => Number(call.params.chat_id)
    const other = (i: number) =>
      Effect.gen(function*() {
        // Once the flood is under way, staggered a little as real users are.
        while (floodDone < Math.min(50, options.floodUpdates) && performance.now() < deadline) yield* pause(5)
        yield* pause(i * 20)
        const chatId = OTHERS_BASE + i
        const step = (update: Record<string, unknown>, expected: (call: FakeTelegram.RecordedCall) => boolean) =>
          Effect.gen(function*() {
            const mark = telegram.mark()
            const sentAt = performance.now()
            yield* post(update)
            const answer = yield* telegram.awaitCall(
              "sendMessage",
              (c) => chatOf(c) === chatId && expected(c),
              { after: mark, timeoutMs: Math.min(remaining(), 60_000) }
            )
            stepWaits.push(performance.now() - sentAt)
            return { answer, waited: performance.now() - sentAt }
          })
        const welcome = yield* step(
          FakeTelegram.textMessage({ chatId, text: "/start" }),
          (c) => c.params.text === ru.welcome
        )
        startWaits.push(welcome.waited)
        yield* step(
          FakeTelegram.callbackQuery({
            chatId,
            data: "zimage:start",
            messageId: FakeTelegram.messageIdOf(welcome.answer)
          }),
          (c) => c.params.text === ru.askPrompt
        )
        const ratios = yield* step(
          FakeTelegram.textMessage({ chatId, text: `a quiet harbour at dawn, user ${i}` }),
          (c) => c.params.text === ru.chooseRatio
        )
        const mark = telegram.mark()
        yield* step(
          FakeTelegram.callbackQuery({
            chatId,
            data: "zimage:ratio:1:1",
            messageId: FakeTelegram.messageIdOf(ratios.answer)
          }),
          (c) => String(c.params.text).startsWith("⏳")
        )
        yield* telegram.awaitCall("sendPhoto", (c) => chatOf(c) === chatId, {
          after: mark,
          timeoutMs: Math.min(remaining(), 120_000)
        })
        photos++
      }).pipe(Effect.catch((error) => Effect.sync(() => void failures.push(`user ${i}: ${error.message}`))))

    yield* Effect.all([
      flood,
      Effect.forEach(Array.from({ length: options.otherChats }, (_, i) => i), other, { concurrency: "unbounded" })
    ], { concurrency: "unbounded" })
    say(`others done: ${photos} of ${options.otherChats} pictures`)

    // -- the end, from the database and the outside ---------------------------------
    const database = yield* Layer.build(
      Layer.orDie(PgClient.layer({ url: Redacted.make(options.databaseUrl), maxConnections: 1 }))
    )
    const query = <A>(f: (sql: SqlClient) => Effect.Effect<A, unknown>) =>
      Effect.gen(function*() {
        return yield* f(yield* SqlClient)
      }).pipe(Effect.provide(database), Effect.orDie)
    const counts = query((sql) =>
      sql<{ open: number; dead: number; flooder: number }>`
        SELECT count(*) FILTER (WHERE status IN ('pending', 'processing'))::int AS open,
               count(*) FILTER (WHERE status = 'dead')::int AS dead,
               count(*) FILTER (WHERE chat_id = ${FLOODER})::int AS flooder
        FROM telegram_updates`.pipe(Effect.map((rows) => rows[0]!))
    )
    // The flooder's last stored updates may still wait out Telegram's retry_after.
    let last = yield* counts
    while (last.open > 0 && performance.now() < deadline) {
      yield* pause(200)
      last = yield* counts
    }
    // Once the flood has passed, its user is answered as usual again.
    yield* pause(Math.max(0, floodEndedAt + options.afterFloodMs - performance.now()))
    const afterMark = telegram.mark()
    yield* post(FakeTelegram.textMessage({ chatId: FLOODER, text: "/start" }))
    const afterFlood = yield* telegram.awaitCall(
      "sendMessage",
      (c) => chatOf(c) === FLOODER && c.params.text === ru.welcome,
      { after: afterMark, timeoutMs: Math.min(remaining(), 60_000) }
    ).pipe(Effect.option)
    last = yield* counts
    while (last.open > 0 && performance.now() < deadline) {
      yield* pause(100)
      last = yield* counts
    }
    const metrics = yield* Effect.promise(() =>
      fetch(`http://127.0.0.1:${port}/metrics`).then((r) => r.text(), () => "")
    )
    const health = yield* Effect.promise(() => getJson(port, "/health").catch(() => ({ status: 0, body: {} })))

    const toFlooder = telegram.calls().filter((c) => SEND_METHODS.has(c.method) && chatOf(c) === FLOODER)
    const delivered = toFlooder.filter((c) => c.response !== undefined && c.response.status === 200)
    const flooder = {
      sent: floodDone + 1,
      messagesDelivered: delivered.length,
      answered429: telegram.floodLimited(FLOODER),
      notices: delivered.filter((c) => c.params.text === ru.tooManyMessages).length,
      rowsStored: last.flooder,
      droppedMetric: droppedOf(metrics),
      floodSeconds
    }
    const startWait = percentiles(startWaits)
    if (options.logDir !== undefined) {
      fs.mkdirSync(options.logDir, { recursive: true })
      fs.writeFileSync(path.join(options.logDir, "flood-drill.log"), service.lines().join("\n") + "\n")
    }
    const checks = [
      {
        name: "every other user welcomed and given the picture",
        ok: failures.length === 0 && photos === options.otherChats && startWaits.length === options.otherChats,
        detail: `${startWaits.length} welcomed, ${photos} pictures of ${options.otherChats}${
          failures.length > 0 ? `; ${failures.slice(0, 3).join("; ")}` : ""
        }`
      },
      {
        name: `others' /start p99 within ${options.startP99GoalMs} ms`,
        ok: startWait.p99 <= options.startP99GoalMs,
        detail: `p50 ${startWait.p50.toFixed(0)} ms, p99 ${startWait.p99.toFixed(0)} ms, max ${
          startWait.max.toFixed(0)
        } ms`
      },
      {
        name: "the flooder got one notice and few other messages",
        ok: flooder.notices === 1 && flooder.messagesDelivered <= 12,
        detail:
          `${flooder.messagesDelivered} delivered (${flooder.notices} notice), ${flooder.answered429} answered 429`
      },
      {
        name: "after the flood, its user's /start is answered again",
        ok: afterFlood._tag === "Some",
        detail: afterFlood._tag === "Some" ? "welcomed" : "no welcome within 60 s"
      },
      {
        name: "few of the flood stored, the rest counted as dropped",
        ok: flooder.rowsStored <= 41 + flooder.floodSeconds &&
          flooder.rowsStored + flooder.droppedMetric === floodDone + 1,
        detail: `${flooder.rowsStored} rows stored, ${flooder.droppedMetric} dropped, of ${floodDone} sent`
      },
      {
        name: "no update dead or left unfinished; the instance healthy",
        ok: last.dead === 0 && last.open === 0 && health.status === 200,
        detail: `${last.dead} dead, ${last.open} open, /health ${health.status}`
      }
    ]
    return {
      startWait,
      stepWait: percentiles(stepWaits),
      welcomed: startWaits.length,
      photos,
      flooder,
      deadUpdates: last.dead,
      openUpdates: last.open,
      durationMs: performance.now() - started,
      checks
    } satisfies FloodDrillReport
  })
