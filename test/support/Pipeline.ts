/**
 * Shared pieces for tests of the update pipeline: the services the leader-only
 * layers need (real PostgreSQL, the inbox, the Telegram service on a
 * FakeTelegram), a recording `UpdateHandler` whose behaviour a test scripts
 * per update, and a way to run a leader-only layer in its own "leadership
 * scope" that the test closes with a graceful or an abrupt exit.
 */
import { Clock, Effect, Exit, Layer, Queue, Scope } from "effect"
import { SqlClient } from "effect/sql/SqlClient"
import type { TestClock } from "effect/testing"
import { Inbox } from "../../src/inbox/Inbox.ts"
import { LeaderTerm } from "../../src/leadership/LeaderTerm.ts"
import { Telegram } from "../../src/telegram/Telegram.ts"
import type { Update } from "../../src/telegram/TelegramUpdate.ts"
import { type UpdateContext, UpdateHandler, UpdateHandlerError } from "../../src/dispatch/UpdateHandler.ts"
import * as FakeTelegram from "../fakes/FakeTelegram.ts"
import { TestConfigLive } from "./TestConfig.ts"
import { TestDatabaseLive } from "./TestDatabase.ts"

/** Inbox + Telegram (on a FakeTelegram) + a fresh migrated database + config. */
export const PipelineLive = (env: Record<string, string> = {}) =>
  Layer.unwrap(Effect.gen(function*() {
    const fake = yield* FakeTelegram.FakeTelegram
    return Layer.mergeAll(Inbox.layerWithoutHealth, Telegram.layer).pipe(
      Layer.provideMerge(TestDatabaseLive),
      Layer.provideMerge(TestConfigLive({ ...fake.env, ...env }))
    )
  })).pipe(Layer.provideMerge(FakeTelegram.FakeTelegram.layer()))

/** Bounds a wait on a real event in real time, whatever clock the test uses. */
export const within = <A, E, R>(millis: number, effect: Effect.Effect<A, E, R>) =>
  Effect.withFiber((fiber) => {
    const bounded = effect.pipe(Effect.timeout(millis))
    const clock = fiber.getRef(Clock.Clock) as Partial<TestClock.TestClock>
    return typeof clock.withLive === "function" ? clock.withLive(bounded) : bounded
  })

export interface HandledEvent {
  readonly updateId: number
  readonly chatId: number | undefined
  readonly attempt: number
  readonly phase: "start" | "end" | "failed"
}

/** What the handler does for an update on a given run (1-based). */
export type Script = (context: UpdateContext, update: Update) => Effect.Effect<void, UpdateHandlerError>

export const fail = (message = "scripted failure"): Effect.Effect<never, UpdateHandlerError> =>
  Effect.fail(new UpdateHandlerError({ message }))

export const chatIdOf = (update: Update): number | undefined =>
  update.message?.chat.id ?? update.callback_query?.message?.chat.id ?? update.callback_query?.from.id

/**
 * A handler that records every run (start, end or failure) in order and runs
 * an optional script per update id. `events` is the full history; `awaitEvents`
 * waits (bounded, real time) until `n` matching events were recorded.
 */
export const makeRecordingHandler = Effect.gen(function*() {
  const history: Array<HandledEvent> = []
  const queue = yield* Queue.unbounded<HandledEvent>()
  const scripts = new Map<number, Script>()
  const record = (event: HandledEvent) => {
    history.push(event)
    Queue.offerUnsafe(queue, event)
  }
  const handler = UpdateHandler.of({
    handle: (update, context) => {
      const chatId = chatIdOf(update)
      const base = { updateId: context.updateId, chatId, attempt: context.attempt }
      const script = scripts.get(context.updateId)
      return Effect.sync(() => record({ ...base, phase: "start" })).pipe(
        Effect.andThen(script === undefined ? Effect.void : script(context, update)),
        Effect.tap(() => Effect.sync(() => record({ ...base, phase: "end" }))),
        Effect.tapError(() => Effect.sync(() => record({ ...base, phase: "failed" })))
      )
    }
  })
  const awaitEvents = (n: number, match: (event: HandledEvent) => boolean, millis = 10_000) =>
    within(
      millis,
      Effect.gen(function*() {
        for (;;) {
          if (history.filter(match).length >= n) return history.filter(match)
          yield* Queue.take(queue)
        }
      })
    )
  return {
    handler,
    history: () => [...history],
    ended: () => history.filter((e) => e.phase === "end"),
    script: (updateId: number, script: Script) => void scripts.set(updateId, script),
    awaitEvents,
    awaitEnded: (updateIds: ReadonlyArray<number>, millis?: number) =>
      awaitEvents(updateIds.length, (e) => e.phase === "end" && updateIds.includes(e.updateId), millis)
  }
})

export interface Leadership {
  readonly scope: Scope.Closeable
  /** Graceful release (shutdown): the scope closes with a success exit. */
  readonly release: Effect.Effect<void>
  /** Leadership lost: the scope closes with an interrupt exit. */
  readonly lose: Effect.Effect<void>
}

/**
 * Builds `layer` in a fresh scope, as LeaderLock does on becoming ACTIVE. The
 * test scope closes it (as lost) if the test did not.
 */
export const becomeLeader = <E, R>(
  layer: Layer.Layer<never, E, R | LeaderTerm>,
  handler: UpdateHandler["Service"]
) =>
  Effect.gen(function*() {
    const scope = yield* Scope.make()
    yield* Effect.addFinalizer(() => Scope.close(scope, Exit.interrupt()))
    yield* Layer.buildWithScope(
      layer.pipe(Layer.provide(LeaderTerm.layer), Layer.provide(Layer.succeed(UpdateHandler, handler))),
      scope
    )
    return {
      scope,
      release: Scope.close(scope, Exit.void),
      lose: Scope.close(scope, Exit.interrupt())
    } satisfies Leadership
  })

export interface UpdateRow {
  readonly update_id: number
  readonly chat_id: number | null
  readonly status: string
  readonly attempts: number
  readonly last_error: string | null
  readonly claimed_by: string | null
}

export const rows = Effect.gen(function*() {
  const sql = yield* SqlClient
  const found = yield* sql<{
    update_id: bigint
    chat_id: bigint | null
    status: string
    attempts: number
    last_error: string | null
    claimed_by: string | null
  }>`SELECT update_id, chat_id, status, attempts, last_error, claimed_by FROM telegram_updates ORDER BY update_id`
  return found.map((r): UpdateRow => ({
    ...r,
    update_id: Number(r.update_id),
    chat_id: r.chat_id === null ? null : Number(r.chat_id)
  }))
})

export const rowOf = (updateId: number) => Effect.map(rows, (all) => all.find((r) => r.update_id === updateId))

export const clearInbox = Effect.gen(function*() {
  const sql = yield* SqlClient
  yield* sql`DELETE FROM telegram_updates`
})

/** Stores updates through the inbox (as the webhook and the poller do). */
export const store = (...updates: ReadonlyArray<Record<string, unknown>>) =>
  Effect.gen(function*() {
    const inbox = yield* Inbox
    return yield* inbox.store(updates as ReadonlyArray<{ update_id: number }>)
  })

export const message = (updateId: number, chatId: number, text = `message ${updateId}`) => ({
  ...FakeTelegram.textMessage({ chatId, text }),
  update_id: updateId
})
