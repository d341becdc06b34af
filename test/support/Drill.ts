/**
 * The fault drill: real service processes (`src/main.ts`) on one database,
 * behind a load balancer that stands in for Render's router, with the fake
 * Bot API delivering webhooks and the fake Kie (its real createTask limit)
 * doing the generations. While traffic flows, the ACTIVE instance is SIGKILLed
 * (and replaced, as Render restarts it) and its database connections are cut
 * (each instance reaches PostgreSQL through its own proxy). Then it checks,
 * from the outside and from the database:
 *
 * - every update stored once, finished (`done`), none dead or left behind;
 * - per-chat order: each chat's replies, in the order the fake Bot API got
 *   them, are exactly what in-order handling produces (a reply repeated right
 *   after itself is a re-send, counted and allowed only for an update whose
 *   handler was cut off by a kill, i.e. claimed more than once);
 * - every generation delivered as one photo, one Kie task per generation,
 *   no createTask beyond the rate limit answered 429;
 * - no secret in any log line of any instance;
 * - the last instances stop with exit code 0 on SIGTERM.
 *
 * `npm run chaos` runs the full drill (bench/chaos.ts); `npm test` runs a small
 * one (test/ChaosDrill.test.ts). Everything is on 127.0.0.1; every wait is
 * bounded.
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
import { startLoadBalancer } from "./LoadBalancer.ts"
import { type PgProxy, startPgProxy } from "./PgProxy.ts"
import { getJson, type ServiceProcess, startService } from "./ServiceProcess.ts"
import { TEST_BOT_TOKEN, TEST_KIE_KEY, TEST_WEBHOOK_SECRET } from "./TestConfig.ts"

export type Fault = "kill" | "cut"

export interface DrillOptions {
  /** An empty database the instances may migrate and fill. */
  readonly databaseUrl: string
  /** Chats that each send a burst of 5 updates without waiting for replies. */
  readonly burstChats: number
  /** Users that each go through the whole flow (4 updates) to one generation. */
  readonly generations: number
  /** In this order, spread over the run: SIGKILL of the ACTIVE instance, or a cut of its database connections. */
  readonly faults: ReadonlyArray<Fault>
  /** Over how long the traffic is spread. */
  readonly spreadMs: number
  /**
   * Latency of every Bot API answer. Real Telegram takes tens of ms; it also
   * makes a chat's burst queue up in the inbox, so order depends on routing.
   */
  readonly telegramLatencyMs: number
  /**
   * GENERATION_TIMEOUT_MS of the instances. A createTask cut off by a kill
   * before Kie got it can only end at this deadline (a failure notice with the
   * retry button): the engine never sends a second createTask it cannot prove
   * safe, so the drill's user then presses retry.
   */
  readonly generationTimeoutMs: number
  /** Bound on the whole run. */
  readonly timeoutMs: number
  /**
   * When set, a check that no user waited longer than this for any answer
   * (faults included: a kill must not leave a chat waiting for a grace
   * period). `npm run chaos` sets 5 s; the suite's small drill leaves it off,
   * since a loaded CI machine stretches every wait.
   */
  readonly answerWaitGoalMs?: number
  /** Extra environment for every instance. */
  readonly env?: Readonly<Record<string, string>>
  /** Progress lines. */
  readonly progress?: (line: string) => void
  /** Where to write each instance's log lines (kept for a post-mortem). */
  readonly logDir?: string
}

export interface FaultRecord {
  readonly fault: Fault
  readonly victim: string
  /** Wall-clock time of the fault (ms since epoch), comparable with the fakes' call times. */
  readonly atWallMs: number
  /** From the fault to another `/health` reporting `"active":true`. */
  readonly failoverMs: number
  readonly newLeader: string
}

export interface DrillReport {
  readonly updates: number
  readonly chats: number
  readonly updatesDone: number
  readonly updatesDead: number
  readonly updatesClaimedMoreThanOnce: number
  readonly orderViolations: ReadonlyArray<string>
  readonly resentReplies: number
  /** Re-sent replies of updates that were claimed only once: a real duplicate, never allowed. */
  readonly unexplainedResends: ReadonlyArray<string>
  readonly generations: number
  /** First generations that failed (createTask cut off by a kill) and were retried by their users. */
  readonly retriedGenerations: number
  /**
   * Presses of a ratio keyboard that a re-run had sent again, pressed once
   * more after the older one answered "expired": each is one more update.
   */
  readonly stalePresses: number
  readonly photosDelivered: number
  /** Users who got more than one photo. */
  readonly duplicatePhotos: ReadonlyArray<number>
  /**
   * Of those, users whose extra photos a fault explains: every photo but the
   * last was sent before a fault and never recorded (the row names the last
   * one), so the next leader could not know Telegram had it.
   */
  readonly explainedDuplicatePhotos: ReadonlyArray<number>
  readonly missingPhotos: ReadonlyArray<number>
  readonly kieTasksCreated: number
  readonly generationsWithTask: number
  readonly distinctTaskIds: number
  readonly kieRateLimited: number
  /** How long users waited for an answer (ms): the median, the 99th percentile and the longest. */
  readonly answerWait: { readonly p50: number; readonly p99: number; readonly max: number }
  readonly faults: ReadonlyArray<FaultRecord>
  readonly instancesStarted: number
  readonly logLines: number
  readonly secretLeaks: ReadonlyArray<string>
  readonly finalExitCodes: ReadonlyArray<number | string>
  readonly durationMs: number
  /** Every check, with whether it held. */
  readonly checks: ReadonlyArray<{ readonly name: string; readonly ok: boolean; readonly detail: string }>
}

const ACTIVE_LINE = "[LOCK] ✅ ACTIVE MODE"
/** How long a user waits for one answer before the drill records them as stuck. */
const STEP_TIMEOUT_MS = 60_000
const BURST_BASE = 100_000
const USER_BASE = 200_000
const ru = t("ru")
/** What in-order handling of a burst answers, one sendMessage per update. */
const BURST_REPLIES = [ru.welcome, ru.askPrompt, ru.chooseRatio, ru.cancelled, ru.help]

interface Instance {
  readonly name: string
  readonly service: ServiceProcess
  readonly proxy: PgProxy
  readonly port: number
}

const chatOf = (call: FakeTelegram.RecordedCall) => Number(call.params.chat_id)
const messageIdOf = FakeTelegram.messageIdOf

/**
 * Walks a chat's replies against what in-order handling gives: a reply equal
 * to the expected one moves on; one equal to the previous expected reply is a
 * re-send of that update's answer (its index is returned); anything else
 * means the chat's updates were handled out of order (or wrongly).
 */
const align = (
  replies: ReadonlyArray<string>,
  expected: ReadonlyArray<string>,
  match: (got: string, want: string) => boolean
) => {
  let k = 0
  const resentOf: Array<number> = []
  for (const reply of replies) {
    if (k < expected.length && match(reply, expected[k]!)) k++
    else if (k > 0 && match(reply, expected[k - 1]!)) resentOf.push(k - 1)
    else return { inOrder: false, resentOf }
  }
  return { inOrder: k === expected.length, resentOf }
}

/** The median, the 99th percentile and the largest of `values`. */
export const percentiles = (values: ReadonlyArray<number>) => {
  const sorted = [...values].sort((a, b) => a - b)
  const at = (q: number) =>
    sorted.length === 0 ? 0 : sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))]!
  return { p50: at(0.5), p99: at(0.99), max: sorted.at(-1) ?? 0 }
}

const secretsOf = () => {
  const botSecret = TEST_BOT_TOKEN.split(":")[1]!
  return [TEST_BOT_TOKEN, botSecret, TEST_KIE_KEY, TEST_WEBHOOK_SECRET]
}

export const runDrill = (options: DrillOptions) =>
  Effect.gen(function*() {
    const started = performance.now()
    const say = options.progress ?? (() => {})
    const deadline = started + options.timeoutMs
    const remaining = () => Math.max(1_000, deadline - performance.now())

    const telegram = yield* FakeTelegram.make({ webhookRetryDelayMs: 100, latencyMs: options.telegramLatencyMs })
    const kie = yield* FakeKie.scoped({
      apiKey: TEST_KIE_KEY,
      // A few polls of "generating" before the picture, so faults land mid-generation too.
      defaultTask: { steps: ["waiting", "generating", "generating", localResult()] }
    })
    const balancer = yield* startLoadBalancer

    const env: Record<string, string> = {
      ...telegram.env,
      KIE_API_KEY: TEST_KIE_KEY,
      KIE_BASE_URL: kie.url,
      PUBLIC_URL: balancer.url,
      TELEGRAM_WEBHOOK_SECRET: TEST_WEBHOOK_SECRET,
      PORT: "0",
      HOST: "127.0.0.1",
      LOG_LEVEL: "info",
      LOG_FORMAT: "json",
      KIE_POLL_INTERVAL_MS: "500",
      GENERATION_TIMEOUT_MS: String(options.generationTimeoutMs),
      ...options.env
    }

    // -- instances ------------------------------------------------------------
    const live: Array<Instance> = []
    const all: Array<Instance> = []
    let instanceSeq = 0
    yield* Effect.addFinalizer(() =>
      Effect.sync(() => {
        for (const instance of all) instance.service.killAll()
      })
    )
    const spawnInstance = Effect.gen(function*() {
      const name = `drill-${++instanceSeq}`
      const proxy = yield* startPgProxy(options.databaseUrl)
      const service = startService({ ...env, DATABASE_URL: proxy.url, INSTANCE_ID: name })
      const port = yield* Effect.promise(() => service.port())
      const instance = { name, service, proxy, port }
      all.push(instance)
      live.push(instance)
      balancer.setBackends(live.map((i) => i.port))
      say(`${name} started (pid ${service.pid}, port ${port})`)
      return instance
    })
    const health = (instance: Instance) =>
      Effect.promise(() => getJson(instance.port, "/health").catch(() => ({ status: 0, body: {} as any })))
    /** The ACTIVE instance (polled on `/health`), other than `not`; bounded. */
    const awaitLeader = (not?: Instance) =>
      Effect.gen(function*() {
        const until = performance.now() + Math.min(remaining(), 60_000)
        while (performance.now() < until) {
          for (const instance of live) {
            if (instance === not) continue
            const answer = yield* health(instance)
            if (answer.body.active === true) return instance
          }
          yield* Effect.promise(() => new Promise((resolve) => setTimeout(resolve, 20)))
        }
        return yield* Effect.die(new Error("no instance became ACTIVE within 60 s"))
      })

    const first = yield* spawnInstance
    yield* Effect.promise(() => first.service.waitForLine((l) => l.includes(ACTIVE_LINE), 60_000))
    yield* spawnInstance
    yield* telegram.awaitCall("setWebhook", undefined, { timeoutMs: 30_000 }).pipe(Effect.orDie)

    // -- traffic ----------------------------------------------------------------
    const burstUpdates = new Map<number, Array<number>>()
    const userUpdates = new Map<number, Array<number>>()
    const totalUpdates = options.burstChats * BURST_REPLIES.length + options.generations * 4
    const expectedEvents = options.burstChats * BURST_REPLIES.length + options.generations
    const events = () =>
      telegram.calls("sendMessage").filter((c) => chatOf(c) >= BURST_BASE && chatOf(c) < USER_BASE).length +
      telegram.calls("sendPhoto").filter((c) => chatOf(c) >= USER_BASE).length
    const pause = (ms: number) => Effect.promise(() => new Promise((resolve) => setTimeout(resolve, ms)))

    const burst = (i: number) =>
      Effect.gen(function*() {
        yield* pause((options.spreadMs * i) / Math.max(1, options.burstChats))
        const chatId = BURST_BASE + i
        const ids = [
          FakeTelegram.textMessage({ chatId, text: "/start" }),
          FakeTelegram.callbackQuery({ chatId, data: "zimage:start" }),
          FakeTelegram.textMessage({ chatId, text: `a lighthouse, chat ${chatId}` }),
          FakeTelegram.textMessage({ chatId, text: "/cancel" }),
          FakeTelegram.textMessage({ chatId, text: "/help" })
        ].map((update) => telegram.pushUpdate(update))
        burstUpdates.set(chatId, ids)
      })

    const stuckUsers: Array<string> = []
    /** Ratio presses on a keyboard a re-run had replaced (answered "expired"; the user pressed the newer one). */
    const stalePresses: Array<number> = []
    /** How long each user waited for each answer, with the chat and when the update was sent (wall clock). */
    const answerLog: Array<{ readonly chatId: number; readonly sentAtWallMs: number; readonly waitMs: number }> = []
    /** Chats whose first generation failed and whose user pressed the retry button. */
    const retried: Array<number> = []
    const retryDataOf = (call: FakeTelegram.RecordedCall) => {
      const markup = call.params.reply_markup as {
        inline_keyboard?: ReadonlyArray<ReadonlyArray<{ callback_data?: string }>>
      }
      return markup?.inline_keyboard?.flat().map((b) => b.callback_data).find((d) => d?.startsWith("zimage:retry:"))
    }
    type Outcome = { readonly _tag: "Photo" } | {
      readonly _tag: "Retry"
      readonly data: string
      readonly messageId: number
    }
    /** The photo, or a failure notice with the retry button, for `chatId` after `mark`; polled, bounded. */
    const awaitOutcome = (chatId: number, mark: number) =>
      Effect.gen(function*() {
        const until = performance.now() + Math.min(remaining(), options.generationTimeoutMs + 60_000)
        while (performance.now() < until) {
          const later = (method: string) => telegram.calls(method).filter((c) => c.seq > mark && chatOf(c) === chatId)
          if (later("sendPhoto").length > 0) return { _tag: "Photo" } as Outcome
          for (const call of [...later("editMessageText"), ...later("sendMessage")]) {
            const data = retryDataOf(call)
            if (data !== undefined) {
              const messageId = call.method === "sendMessage" ? messageIdOf(call) : Number(call.params.message_id)
              return { _tag: "Retry", data, messageId } as Outcome
            }
          }
          yield* pause(100)
        }
        return yield* Effect.fail(new Error(`no photo and no retry button for chat ${chatId}`))
      })
    /** A user who reads each answer before the next step, as people do; one who waits in vain is recorded. */
    const user = (i: number) =>
      Effect.gen(function*() {
        yield* pause((options.spreadMs * i) / 2 / Math.max(1, options.generations))
        const chatId = USER_BASE + i
        const ids: Array<number> = []
        userUpdates.set(chatId, ids)
        const step = (update: Record<string, unknown>, expected: (text: string) => boolean) =>
          Effect.gen(function*() {
            const mark = telegram.mark()
            const sentAt = performance.now()
            ids.push(telegram.pushUpdate(update))
            const answer = yield* telegram.awaitCall(
              "sendMessage",
              (c) => chatOf(c) === chatId && expected(String(c.params.text)),
              { after: mark, timeoutMs: Math.min(remaining(), STEP_TIMEOUT_MS) }
            )
            const waitMs = performance.now() - sentAt
            answerLog.push({ chatId, sentAtWallMs: Date.now() - waitMs, waitMs })
            return answer
          })
        const welcome = yield* step(FakeTelegram.textMessage({ chatId, text: "/start" }), (s) => s === ru.welcome)
        yield* step(
          FakeTelegram.callbackQuery({ chatId, data: "zimage:start", messageId: messageIdOf(welcome) }),
          (s) => s === ru.askPrompt
        )
        yield* step(
          FakeTelegram.textMessage({ chatId, text: `a red fox in the snow, user ${i}` }),
          (s) => s === ru.chooseRatio
        )
        // The user presses a ratio on the newest keyboard. When a kill cut off the
        // prompt's handler after its keyboard went out, the re-run sends a second
        // one and the first is stale: pressing it is answered "expired", and the
        // user, like a person, presses the newer one.
        const mark = telegram.mark()
        for (let press = 1;; press++) {
          const newest = telegram.calls("sendMessage").filter((c) =>
            chatOf(c) === chatId && c.params.text === ru.chooseRatio
          ).at(-1)!
          const queryId = `drill-${chatId}-${press}`
          const pressed = telegram.mark()
          const update = FakeTelegram.callbackQuery({
            chatId,
            data: "zimage:ratio:1:1",
            messageId: messageIdOf(newest),
            id: queryId
          })
          const updateId = telegram.pushUpdate(update)
          const answer = yield* telegram.awaitCall(
            "answerCallbackQuery",
            (c) => c.params.callback_query_id === queryId,
            { after: pressed, timeoutMs: Math.min(remaining(), STEP_TIMEOUT_MS) }
          )
          if (answer.params.text === ru.expired && press < 3) {
            stalePresses.push(updateId)
            continue
          }
          ids.push(updateId)
          yield* telegram.awaitCall(
            "sendMessage",
            (c) => chatOf(c) === chatId && String(c.params.text).startsWith("⏳"),
            {
              after: pressed,
              timeoutMs: Math.min(remaining(), STEP_TIMEOUT_MS)
            }
          )
          break
        }
        const outcome = yield* awaitOutcome(chatId, mark)
        if (outcome._tag === "Retry") {
          retried.push(chatId)
          ids.push(
            telegram.pushUpdate(
              FakeTelegram.callbackQuery({ chatId, data: outcome.data, messageId: outcome.messageId })
            )
          )
          const again = yield* awaitOutcome(chatId, telegram.mark())
          if (again._tag === "Retry") stuckUsers.push(`user ${i}: told to retry twice`)
        }
      }).pipe(Effect.catch((error) => Effect.sync(() => void stuckUsers.push(`user ${i}: ${error.message}`))))

    // -- faults -----------------------------------------------------------------
    const faults: Array<FaultRecord> = []
    const injectFaults = Effect.gen(function*() {
      for (const [index, fault] of options.faults.entries()) {
        const threshold = Math.ceil((expectedEvents * (index + 1)) / (options.faults.length + 1))
        while (events() < threshold && performance.now() < deadline) yield* pause(20)
        const victim = yield* awaitLeader()
        const at = performance.now()
        const atWallMs = Date.now()
        if (fault === "kill") {
          victim.service.kill("SIGKILL")
          yield* Effect.promise(() => victim.service.exited)
          live.splice(live.indexOf(victim), 1)
          balancer.setBackends(live.map((i) => i.port))
        } else {
          victim.proxy.cut()
        }
        const leader = yield* awaitLeader(victim)
        const failoverMs = performance.now() - at
        faults.push({ fault, victim: victim.name, atWallMs, failoverMs, newLeader: leader.name })
        say(
          `${fault} of ${victim.name} at ${events()}/${expectedEvents} events: ${leader.name} ACTIVE after ${
            failoverMs.toFixed(0)
          } ms`
        )
        // Render restarts a crashed instance; keep two.
        if (fault === "kill") yield* spawnInstance
      }
    })

    // Kie calls back when a task finishes (here: 1.5 s after createTask, while the
    // engine also polls); a callback nobody took (502, all instances down) is retried.
    const calledBack = new Set<string>()
    const callbacks = Effect.gen(function*() {
      while (true) {
        for (const task of kie.tasks.values()) {
          if (calledBack.has(task.taskId) || Date.now() - task.createdAt < 1_500) continue
          const result = yield* Effect.promise(() => kie.sendCallback(task.taskId).catch(() => ({ status: 0 })))
          if (result.status >= 200 && result.status < 300) calledBack.add(task.taskId)
        }
        yield* pause(200)
      }
    })
    yield* Effect.forkScoped(callbacks)

    yield* Effect.all([
      Effect.forEach(Array.from({ length: options.burstChats }, (_, i) => i), burst, { concurrency: "unbounded" }),
      Effect.forEach(Array.from({ length: options.generations }, (_, i) => i), user, { concurrency: "unbounded" }),
      injectFaults
    ], { concurrency: "unbounded" })
    say(`all ${totalUpdates} updates sent; waiting for the work to finish`)

    // -- wait for the end, from the database ------------------------------------------
    // One connection of the drill's own for the whole check, not one per poll.
    const database = yield* Layer.build(
      Layer.orDie(PgClient.layer({ url: Redacted.make(options.databaseUrl), maxConnections: 1 }))
    )
    const query = <A>(f: (sql: SqlClient) => Effect.Effect<A, unknown>) =>
      Effect.gen(function*() {
        return yield* f(yield* SqlClient)
      }).pipe(Effect.provide(database), Effect.orDie)
    interface Progress {
      readonly stored: number
      readonly open: number
      readonly generationsOpen: number
    }
    let last: Progress = { stored: 0, open: -1, generationsOpen: -1 }
    while (performance.now() < deadline) {
      last = yield* query((sql) =>
        Effect.gen(function*() {
          const [u] = yield* sql<{ stored: number; open: number }>`
            SELECT count(*)::int AS stored,
                   count(*) FILTER (WHERE status IN ('pending', 'processing'))::int AS open
            FROM telegram_updates`
          const [g] = yield* sql<{ open: number }>`
            SELECT count(*) FILTER (WHERE status NOT IN ('delivered', 'failed'))::int AS open FROM generations`
          return { stored: u!.stored, open: u!.open, generationsOpen: g!.open }
        })
      )
      const photos = telegram.calls("sendPhoto").length
      if (
        last.stored >= totalUpdates + retried.length + stalePresses.length && last.open === 0 &&
        last.generationsOpen === 0 &&
        photos >= options.generations
      ) {
        break
      }
      yield* pause(200)
    }
    say(`finished: ${JSON.stringify(last)}`)

    // -- stop the last instances the way a deploy does ----------------------------------
    const finalExitCodes: Array<number | string> = []
    for (const instance of live) instance.service.kill("SIGTERM")
    for (const instance of live) {
      finalExitCodes.push(
        yield* Effect.promise(() =>
          Promise.race([
            instance.service.exited,
            new Promise<string>((resolve) => setTimeout(() => resolve("timeout"), 40_000))
          ])
        )
      )
    }

    // -- checks -----------------------------------------------------------------------
    const rows = yield* query((sql) => sql<{ update_id: string; chat_id: string; status: string; attempts: number }>`
        SELECT update_id, chat_id, status, attempts FROM telegram_updates ORDER BY update_id`)
    const attemptsOf = new Map(rows.map((r) => [Number(r.update_id), r.attempts]))
    const generationRows = yield* query((
      sql
    ) => sql<{
      chat_id: string
      status: string
      kie_task_id: string | null
      fail_code: string | null
      photo_message_id: string | null
    }>`
        SELECT chat_id, status, kie_task_id, fail_code, photo_message_id FROM generations`)

    const orderViolations: Array<string> = []
    const unexplainedResends: Array<string> = []
    let resentReplies = 0
    const repliesOf = (chatId: number) =>
      telegram.calls("sendMessage").filter((c) => chatOf(c) === chatId).map((c) => String(c.params.text))
    const checkChat = (
      chatId: number,
      ids: ReadonlyArray<number>,
      expected: ReadonlyArray<string>,
      match: (got: string, want: string) => boolean
    ) => {
      const replies = repliesOf(chatId)
      const { inOrder, resentOf } = align(replies, expected, match)
      if (!inOrder) orderViolations.push(`chat ${chatId}: ${JSON.stringify(replies.map((r) => r.slice(0, 24)))}`)
      resentReplies += resentOf.length
      for (const k of resentOf) {
        // Which update sent it twice is ambiguous when expected replies next to
        // it are the same text (two "⏳" status messages): any update of that
        // run may be the one; updates that send no message (stale presses)
        // shift the run later.
        let first = k
        let last = k
        while (first > 0 && expected[first - 1] === expected[k]) first--
        while (last + 1 < expected.length && expected[last + 1] === expected[k]) last++
        const candidates = ids.slice(first, last + 1 + Math.max(0, ids.length - expected.length))
        if (!candidates.some((updateId) => (attemptsOf.get(updateId) ?? 0) >= 2)) {
          unexplainedResends.push(
            `chat ${chatId}, updates ${candidates.join("/")}: reply ${k} sent twice, each claimed once`
          )
        }
      }
    }
    const same = (a: string, b: string) => a === b
    for (const [chatId, ids] of burstUpdates) checkChat(chatId, ids, BURST_REPLIES, same)
    const userReplies = [ru.welcome, ru.askPrompt, ru.chooseRatio, "⏳"]
    const status = (a: string, b: string) => a === b || (b === "⏳" && a.startsWith(b))
    for (const [chatId, ids] of userUpdates) {
      // A retry press answers with a new status message.
      checkChat(chatId, ids, retried.includes(chatId) ? [...userReplies, "⏳"] : userReplies, status)
    }

    const photosByChat = new Map<number, number>()
    for (const call of telegram.calls("sendPhoto")) {
      photosByChat.set(chatOf(call), (photosByChat.get(chatOf(call)) ?? 0) + 1)
    }
    const userChats = [...userUpdates.keys()]
    const duplicatePhotos = userChats.filter((c) => (photosByChat.get(c) ?? 0) > 1)
    // A photo Telegram took just before a fault, whose message id the dying leader never recorded,
    // is sent again by the next leader: Telegram has no idempotency key. Only that case is allowed.
    // A cut leader lives on without its database until it notices the loss, so "just before" reaches
    // to that moment: a photo it sent meanwhile could not be recorded either.
    const noticedAt = (fault: FaultRecord): number => {
      if (fault.fault === "kill") return fault.atWallMs
      const victim = all.find((instance) => instance.name === fault.victim)
      for (const line of victim?.service.lines() ?? []) {
        if (!line.includes("leader lock lost")) continue
        const at = Date.parse((JSON.parse(line) as { timestamp?: string }).timestamp ?? "")
        if (at >= fault.atWallMs) return at
      }
      return fault.atWallMs
    }
    const noticed = new Map(faults.map((fault) => [fault, noticedAt(fault)]))
    const explainedDuplicatePhotos = duplicatePhotos.filter((chatId) => {
      const photos = telegram.calls("sendPhoto").filter((c) => chatOf(c) === chatId)
      const recorded = generationRows.find((g) => Number(g.chat_id) === chatId && g.photo_message_id !== null)
      const last = photos.at(-1)!
      if (last.response === undefined || recorded === undefined) return false
      if (Number(recorded.photo_message_id) !== messageIdOf(last)) return false
      return photos.slice(0, -1).every((photo, i) =>
        faults.some((f) => noticed.get(f)! >= photo.at && f.atWallMs <= photos[i + 1]!.at)
      )
    })
    const missingPhotos = userChats.filter((c) => (photosByChat.get(c) ?? 0) === 0)
    const taskIds = generationRows.flatMap((g) => (g.kie_task_id === null ? [] : [g.kie_task_id]))
    const delivered = generationRows.filter((g) => g.status === "delivered")
    const failedGenerations = generationRows.filter((g) => g.status !== "delivered")
    // A paid picture is never lost: every task Kie created belongs to a delivered generation.
    const deliveredTasks = new Set(delivered.map((g) => g.kie_task_id))
    const lostTasks = [...kie.tasks.keys()].filter((id) => !deliveredTasks.has(id))

    const secrets = secretsOf()
    const secretLeaks: Array<string> = []
    let logLines = 0
    for (const instance of all) {
      const lines = instance.service.lines()
      logLines += lines.length
      if (options.logDir !== undefined) {
        fs.mkdirSync(options.logDir, { recursive: true })
        fs.writeFileSync(path.join(options.logDir, `${instance.name}.log`), lines.join("\n") + "\n")
      }
      for (const line of lines) {
        if (secrets.some((s) => line.includes(s))) secretLeaks.push(`${instance.name}: ${line.slice(0, 200)}`)
      }
    }
    const botSecretFromFake = telegram.token.split(":")[1]!
    if (!secrets.includes(botSecretFromFake)) secretLeaks.push("the drill checked a token other than the one in use")

    const done = rows.filter((r) => r.status === "done").length
    const dead = rows.filter((r) => r.status === "dead").length
    const report: Omit<DrillReport, "checks"> = {
      updates: rows.length,
      chats: burstUpdates.size + userUpdates.size,
      updatesDone: done,
      updatesDead: dead,
      updatesClaimedMoreThanOnce: rows.filter((r) => r.attempts > 1).length,
      orderViolations,
      resentReplies,
      unexplainedResends,
      generations: generationRows.length,
      retriedGenerations: retried.length,
      stalePresses: stalePresses.length,
      photosDelivered: telegram.calls("sendPhoto").length,
      duplicatePhotos,
      explainedDuplicatePhotos,
      missingPhotos,
      kieTasksCreated: kie.counters.tasksCreated,
      generationsWithTask: taskIds.length,
      distinctTaskIds: new Set(taskIds).size,
      kieRateLimited: kie.counters.rateLimited,
      answerWait: percentiles(answerLog.map((wait) => wait.waitMs)),
      faults,
      instancesStarted: all.length,
      logLines,
      secretLeaks,
      finalExitCodes,
      durationMs: performance.now() - started
    }
    const checks = [
      {
        name: "every user got each answer (within 60 s)",
        ok: stuckUsers.length === 0,
        detail: stuckUsers.length === 0 ? `${options.generations} users` : stuckUsers.slice(0, 3).join("; ")
      },
      ...(options.answerWaitGoalMs === undefined ? [] : [{
        name: `no user waited more than ${(options.answerWaitGoalMs / 1000).toFixed(0)} s for an answer`,
        ok: report.answerWait.max <= options.answerWaitGoalMs,
        detail: `p99 ${(report.answerWait.p99 / 1000).toFixed(2)} s over ${answerLog.length} answers; longest: ${
          [...answerLog].sort((a, b) => b.waitMs - a.waitMs).slice(0, 3).map((wait) => {
            const fault = faults.findLast((f) => f.atWallMs <= wait.sentAtWallMs + wait.waitMs)
            const since = fault === undefined
              ? "before any fault"
              : `sent ${(Math.abs(wait.sentAtWallMs - fault.atWallMs) / 1000).toFixed(2)} s ${
                wait.sentAtWallMs < fault.atWallMs ? "before" : "after"
              } the ${fault.fault} of ${fault.victim}`
            return `chat ${wait.chatId} ${(wait.waitMs / 1000).toFixed(2)} s (${since})`
          }).join("; ")
        }`
      }]),
      {
        name: "every update stored once",
        ok: rows.length === totalUpdates + retried.length + stalePresses.length,
        detail:
          `${rows.length} of ${totalUpdates} + ${retried.length} retry presses + ${stalePresses.length} stale presses`
      },
      {
        name: "every update finished, none dead",
        ok: done === rows.length && dead === 0,
        detail: `${done} done, ${dead} dead`
      },
      {
        name: "per-chat order (replies as in-order handling gives them)",
        ok: orderViolations.length === 0,
        detail: orderViolations.length === 0 ? `${report.chats} chats` : orderViolations.slice(0, 5).join("; ")
      },
      {
        name: "handled once: a reply repeats only for an update a kill cut off",
        ok: unexplainedResends.length === 0,
        detail: `${resentReplies} re-sent, ${unexplainedResends.length} unexplained ${
          unexplainedResends.slice(0, 3).join("; ")
        }`
      },
      {
        name: "every user got exactly one photo (a second only when a fault cut off the recording of the first)",
        ok: duplicatePhotos.length === explainedDuplicatePhotos.length && missingPhotos.length === 0 &&
          delivered.length === options.generations,
        detail:
          `${report.photosDelivered} photos, ${delivered.length} generations delivered for ${options.generations} users; ` +
          `duplicates ${JSON.stringify(duplicatePhotos)} (explained by a fault: ${
            JSON.stringify(explainedDuplicatePhotos)
          }), missing ${JSON.stringify(missingPhotos)}`
      },
      {
        name:
          "a generation fails only when Kie never got its createTask (then the user is told, with the retry button)",
        ok: failedGenerations.every((g) => g.kie_task_id === null && g.status === "failed") &&
          failedGenerations.length === retried.length,
        detail: `${failedGenerations.length} failed (${
          [...new Set(failedGenerations.map((g) => g.fail_code))].join(", ") || "none"
        }), ${retried.length} retried by their users`
      },
      {
        name: "one Kie task per generation, none lost",
        ok: kie.counters.tasksCreated === report.distinctTaskIds &&
          report.distinctTaskIds === report.generationsWithTask &&
          lostTasks.length === 0,
        detail: `${kie.counters.tasksCreated} tasks created, ${report.distinctTaskIds} distinct task ids stored, ` +
          `${lostTasks.length} created but not delivered`
      },
      {
        name: "every fault was followed by a new ACTIVE instance",
        ok: faults.length === options.faults.length,
        detail: faults.map((f) => `${f.fault} ${f.failoverMs.toFixed(0)} ms`).join(", ")
      },
      { name: "no secret in any log line", ok: secretLeaks.length === 0, detail: `${logLines} lines scanned` },
      {
        name: "last instances exit 0 on SIGTERM",
        ok: finalExitCodes.every((c) => c === 0),
        detail: JSON.stringify(finalExitCodes)
      }
    ]
    return { ...report, checks } satisfies DrillReport
  })
