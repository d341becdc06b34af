/**
 * Tests of the generation engine: real PostgreSQL, a FakeKie and a
 * FakeTelegram on loopback, TestClock for every wait. The fake Kie counts its
 * rate window in TestClock time, so its real 20-per-10-s limit applies to
 * the engine's clock.
 *
 * `withEngine(options, body)` builds the services the engine needs on the
 * test's database, and gives `body` a harness to create generations (with a
 * status message, as the chat flow does), start and stop engines in their own
 * "leadership scope", and drive the clock until something holds.
 * `ECHO_LOGS=1` prints every captured log line (debugging a failing test).
 */
import { Clock, type Context, Duration, Effect, Exit, Layer, Option, Scope } from "effect"
import { SqlClient } from "effect/sql/SqlClient"
import { TestClock } from "effect/testing"
import { AppConfig } from "../../src/platform/AppConfig.ts"
import * as GenerationEngine from "../../src/engine/GenerationEngine.ts"
import { type Generation, Generations } from "../../src/generations/Generations.ts"
import { GenerationEngineStatus } from "../../src/generations/GenerationsHealth.ts"
import { type AspectRatio, type Lang, t } from "../../src/texts/Messages.ts"
import { ResultDownload } from "../../src/media/ResultDownload.ts"
import { Telegram } from "../../src/telegram/Telegram.ts"
import { FakeKie, type FakeKieOptions, localResult } from "../fakes/FakeKie.ts"
import * as FakeTelegram from "../fakes/FakeTelegram.ts"
import { CallbackServer, KieStack, serverUrl } from "./KieTestStack.ts"
import { type LogCapture, makeLogCapture } from "./LogCapture.ts"
import { TEST_KIE_KEY } from "./TestConfig.ts"

export interface Leadership {
  /** Graceful release (shutdown): the scope closes with a success exit. */
  readonly release: Effect.Effect<void>
  /** Leadership lost: the scope closes with an interrupt exit. */
  readonly lose: Effect.Effect<void>
}

export interface NewGenerationOptions {
  readonly userId: number
  readonly chatId?: number
  readonly lang?: Lang
  readonly prompt?: string
  readonly aspectRatio?: AspectRatio
  /** A forum topic it was asked in. */
  readonly threadId?: number
  /** Send and record a "⏳ Генерирую..." status message, as the chat flow does (default true). */
  readonly statusMessage?: boolean
}

export interface EngineHarness {
  readonly kie: FakeKie
  readonly telegram: FakeTelegram.FakeTelegramShape
  readonly logs: LogCapture
  /** Builds the engine in a fresh leadership scope (closed as lost when the test ends). */
  readonly startEngine: Effect.Effect<Leadership>
  readonly create: (options: NewGenerationOptions) => Effect.Effect<Generation>
  readonly row: (id: string) => Effect.Effect<Generation>
  /** Lets the real I/O set off by the last clock step finish. */
  readonly settle: Effect.Effect<void>
  /** Moves TestClock by `step` until `done` holds (checked before each step); dies after `maxSteps`. */
  readonly advanceUntil: (
    done: Effect.Effect<boolean>,
    options?: { readonly step?: Duration.Input; readonly maxSteps?: number; readonly what?: string }
  ) => Effect.Effect<number>
  /**
   * Posts Kie's callback for a task to our real `/kie/callback` route (with
   * `callbackServer: true`): to the task's callBackUrl with its origin
   * replaced by the test server's, or without the ref when `withoutRef`.
   */
  readonly sendCallback: (taskId: string, options?: { readonly withoutRef?: boolean }) => Effect.Effect<number>
  /** Moves TestClock `steps` times by `step`, letting the I/O of each step finish. */
  readonly advance: (steps: number, step?: Duration.Input) => Effect.Effect<void>
  /** Photos (and documents) in a chat, as FakeTelegram stored them. */
  readonly media: (chatId: number, kind: "photo" | "document") => ReadonlyArray<FakeTelegram.StoredMessage>
}

let nextUpdateId = 1

export type EngineEnv = GenerationEngine.Requirements | SqlClient

export const withEngine = <A, E>(
  options: {
    readonly env?: Record<string, string>
    readonly fake?: Partial<FakeKieOptions>
    readonly limits?: { readonly maxActivePerUser?: number }
    /** Serve `POST /kie/callback` on loopback (webhook-mode tests). */
    readonly callbackServer?: boolean
  },
  body: (h: EngineHarness) => Effect.Effect<A, E, EngineEnv>
) =>
  Effect.scoped(Effect.gen(function*() {
    const sql = yield* SqlClient
    yield* sql`TRUNCATE generations, kie_tasks, telegram_chats RESTART IDENTITY`.pipe(Effect.orDie)
    const clock = yield* Clock.clockWith(Effect.succeed)
    const kie = yield* FakeKie.scoped({
      apiKey: TEST_KIE_KEY,
      now: () => clock.currentTimeMillisUnsafe(),
      defaultTask: { steps: ["generating", localResult()] },
      ...options.fake
    })
    const telegram = yield* FakeTelegram.make()
    const logs = makeLogCapture({ echo: process.env.ECHO_LOGS === "1" })
    const env = { ...telegram.env, KIE_BASE_URL: kie.url, LOG_LEVEL: "debug", ...options.env }
    const services = Layer.mergeAll(
      Generations.layer,
      Telegram.layer,
      ResultDownload.layer,
      GenerationEngineStatus.layerState
    ).pipe(Layer.provideMerge(KieStack(kie, env)))
    const context = yield* Layer.build(services)
    const callbackBase = options.callbackServer === true
      ? yield* Effect.flatMap(Layer.build(CallbackServer), (server) => serverUrl.pipe(Effect.provide(server))).pipe(
        Effect.provide(context)
      )
      : undefined

    const harness = (): EngineHarness => {
      const settle = Effect.promise(() => Promise.all([kie.idle(10, 3_000), telegram.idle(10, 3_000)])).pipe(
        Effect.andThen(Effect.promise(() => Promise.all([kie.idle(10, 3_000), telegram.idle(10, 3_000)]))),
        Effect.asVoid
      )
      const row = (id: string) =>
        Effect.flatMap(Effect.service(Generations), (g) => g.find(id)).pipe(
          Effect.map(Option.getOrThrow),
          Effect.orDie,
          Effect.provide(context)
        )
      return {
        kie,
        telegram,
        logs,
        startEngine: Effect.gen(function*() {
          const scope = yield* Scope.make()
          yield* Effect.addFinalizer(() => Scope.close(scope, Exit.interrupt()))
          yield* Layer.buildWithScope(GenerationEngine.layer, scope)
          return { release: Scope.close(scope, Exit.void), lose: Scope.close(scope, Exit.interrupt()) }
        }).pipe(Effect.provide(context), Effect.provide(logs.layer)) as Effect.Effect<Leadership>,
        create: (o) =>
          Effect.gen(function*() {
            const generations = yield* Generations
            const config = yield* AppConfig
            const lang = o.lang ?? "ru"
            const chatId = o.chatId ?? o.userId
            const { generation } = yield* generations.create(
              {
                userId: o.userId,
                chatId,
                lang,
                prompt: o.prompt ?? `a picture for user ${o.userId}`,
                aspectRatio: o.aspectRatio ?? "1:1",
                sourceUpdateId: nextUpdateId++,
                threadId: o.threadId
              },
              {
                maxActivePerUser: options.limits?.maxActivePerUser ?? 2,
                dailyLimit: 0,
                timeout: config.generationTimeout
              }
            )
            if (o.statusMessage === false) return generation
            const telegramService = yield* Telegram
            const sent = yield* telegramService.sendMessage({
              chat_id: chatId,
              ...(o.threadId === undefined ? {} : { message_thread_id: o.threadId }),
              text: t(lang).generating
            })
            yield* generations.setStatusMessage(generation.id, sent.message_id, t(lang).generating)
            return { ...generation, statusMessageId: sent.message_id, statusText: t(lang).generating }
          }).pipe(Effect.orDie, Effect.provide(context)),
        row,
        settle,
        advanceUntil: (done, o = {}) =>
          Effect.gen(function*() {
            const step = o.step ?? "1 second"
            const maxSteps = o.maxSteps ?? 300
            yield* settle
            for (let i = 0; i < maxSteps; i++) {
              if (yield* done) return i
              yield* TestClock.adjust(step)
              yield* settle
            }
            if (yield* done) return maxSteps
            return yield* Effect.die(
              new Error(
                `advanceUntil${o.what === undefined ? "" : ` (${o.what})`}: not done after ${maxSteps} steps of ${
                  Duration.format(Duration.fromInputUnsafe(step))
                }`
              )
            )
          }),
        advance: (steps, step = "1 second") =>
          Effect.gen(function*() {
            for (let i = 0; i < steps; i++) {
              yield* TestClock.adjust(step)
              yield* settle
            }
          }),
        sendCallback: (taskId, o = {}) =>
          Effect.promise(async () => {
            const task = kie.tasks.get(taskId)
            if (task?.callBackUrl === undefined || callbackBase === undefined) {
              throw new Error(`sendCallback: task ${taskId} has no callBackUrl or no callback server runs`)
            }
            const original = new URL(task.callBackUrl)
            const url = `${callbackBase}${original.pathname}${o.withoutRef === true ? "" : original.search}`
            const answer = await kie.sendCallback(taskId, { url })
            return answer.status
          }),
        media: (chatId, kind) => telegram.messages(chatId).filter((m) => m.kind === kind)
      }
    }

    return yield* body(harness()).pipe(Effect.provide(context), Effect.provide(logs.layer))
  }))

/** The context type `withEngine` bodies run in, for helpers. */
export type EngineContext = Context.Context<EngineEnv>
