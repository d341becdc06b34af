/**
 * Kie task registry and durable callback store (table `kie_tasks`), and the
 * `POST /kie/callback` route.
 *
 * Why durable: Render routes public traffic to every instance, so Kie's
 * callback may reach a PASSIVE instance while the generation is awaited on
 * the ACTIVE one. The route stores the callback in PostgreSQL and NOTIFYs
 * channel `kie_callback` with the task id; every instance LISTENs and tells
 * its local subscribers (`subscribe`). A subscriber reads the table *after*
 * subscribing, so a callback stored before anyone listened is found too, and
 * a notification missed while the listener reconnected is covered by a
 * "re-check everything" signal after each reconnect (and by polling
 * recordInfo meanwhile).
 *
 * Why a registry: every createTask first inserts a row with a random `ref`
 * that is also put into the callBackUrl (`?ref=`), then stores the task id.
 * This gives three things:
 * - "a callback for an unknown task is 200 and ignored": unknown means no
 *   row, so nobody can fill the table with junk;
 * - trust without an HMAC key: only Kie (and we) know a task's ref, so a
 *   callback carrying the right ref is genuine. One without it (or any
 *   callback when no ref matches) is only a *hint*: it wakes subscribers,
 *   which ask recordInfo themselves instead of believing the body. With
 *   KIE_WEBHOOK_HMAC_KEY set, only signed callbacks get through at all;
 * - recovery: when createTask timed out after sending (KieCreateTaskUncertain),
 *   the task id is unknown, but if Kie did create the task its callback
 *   carries the ref, the row gets its task id, and `findTaskIdByRef` returns
 *   it: the result the user paid for is not lost.
 *
 * Idempotent: the first trusted callback of a task is kept; repeats (Kie may
 * send the same one several times) only count, and do not notify again.
 *
 * The parts:
 * - `sql/*.ts`: every statement on `kie_tasks`, one file per verb, and its
 *   migration (`sql/migrate.ts`); `sql/record.ts` has the table of what a
 *   callback does to a row;
 * - `KieCallbackSignals.ts`: this process's callback signals;
 * - `KieSignature.ts`: the HMAC check of signed callbacks;
 * - here: the `KieCallbacks` service over them (with the LISTEN and pruning
 *   loops) and the route.
 */
import { PgClient } from "@effect/sql-pg"
import {
  Clock,
  Context,
  Duration,
  Effect,
  Layer,
  Metric,
  Option,
  type PubSub,
  Redacted,
  Result,
  Schedule,
  Schema,
  type Scope,
  Stream
} from "effect"
import { HttpRouter, HttpServerRequest, HttpServerResponse } from "effect/http"
import { SqlClient } from "effect/sql/SqlClient"
import type { SqlError } from "effect/sql/SqlError"
import { randomBytes } from "node:crypto"
import { listenForever } from "../database/Listen.ts"
import * as Metrics from "../observability/Metrics.ts"
import { AppConfig } from "../platform/AppConfig.ts"
import { repeatLogged } from "../platform/Supervised.ts"
import { type CallbackSignal, makeCallbackSignals } from "./KieCallbackSignals.ts"
import { decodeCallbackBody, isTerminal, type TaskState } from "./KieSchema.ts"
import { checkSignature } from "./KieSignature.ts"
import { bind } from "./sql/bind.ts"
import { findTaskIdByRef } from "./sql/findByRef.ts"
import { forget } from "./sql/forget.ts"
import { lookup, lookupMany, type StoredCallback } from "./sql/lookup.ts"
import { CALLBACK_CHANNEL } from "./sql/notify.ts"
import { prune } from "./sql/prune.ts"
import { record, type RecordCallback, type RecordOutcome } from "./sql/record.ts"
import { register } from "./sql/register.ts"

export { migration } from "./sql/migrate.ts"
export { CALLBACK_CHANNEL }
export type { CallbackSignal, RecordCallback, RecordOutcome, StoredCallback }

/** The route Kie POSTs callbacks to, below PUBLIC_URL. */
export const CALLBACK_PATH = "/kie/callback"
/**
 * Callbacks are small: the task's parameters (a prompt of at most 1000
 * characters, an image URL or two) and the result URLs, a few KiB. 64 KiB
 * leaves ample room; anything bigger is not Kie, and is refused (413) before
 * it is buffered.
 */
export const MAX_CALLBACK_BYTES = 64 * 1024
/** How long registry rows are kept: long enough for any generation and for an operator to look. */
export const REGISTRY_RETENTION: Duration.Duration = Duration.days(7)

/** How often old registry rows are deleted. */
export const prunePolicy = Schedule.spaced("1 hour")
/** The first pruning runs a minute after the store starts, not during start-up. */
const FIRST_PRUNE_AFTER = Duration.minutes(1)

// ---------------------------------------------------------------------------
// Service

/** The task registry and callback store of this process. */
export interface KieCallbacksShape {
  /** A new random ref for a createTask; also used in its callBackUrl. */
  readonly newRef: Effect.Effect<string>
  /** Records that a createTask with this ref is about to be sent. */
  readonly registerPending: (ref: string) => Effect.Effect<void, SqlError>
  /** Records the task id Kie gave the createTask with this ref. */
  readonly bindTask: (ref: string, taskId: string) => Effect.Effect<void, SqlError>
  /** Drops a ref whose createTask definitely created nothing. */
  readonly forget: (ref: string) => Effect.Effect<void, SqlError>
  /** Stores a decoded callback; idempotent. Tells subscribers on every instance. */
  readonly record: (callback: RecordCallback) => Effect.Effect<RecordOutcome, SqlError>
  /** The stored callback of a task, if any. */
  readonly lookup: (taskId: string) => Effect.Effect<Option.Option<StoredCallback>, SqlError>
  /** Stored callbacks of many tasks at once (for a batch poller). */
  readonly lookupMany: (taskIds: ReadonlyArray<string>) => Effect.Effect<ReadonlyMap<string, StoredCallback>, SqlError>
  /** The task id a callback revealed for a ref (recovery after KieCreateTaskUncertain). */
  readonly findTaskIdByRef: (ref: string) => Effect.Effect<Option.Option<string>, SqlError>
  /**
   * Every callback signal from now on, for a batch poller. Subscribe first,
   * then read the store, then take signals: nothing is missed in between.
   */
  readonly subscribe: Effect.Effect<PubSub.Subscription<CallbackSignal>, never, Scope.Scope>
}

/** One pruning pass: deletes rows older than `REGISTRY_RETENTION`, and says so if there were any. */
const prunePass = (sql: SqlClient) =>
  Effect.gen(function*() {
    const deleted = yield* prune(sql, REGISTRY_RETENTION)
    if (deleted > 0) yield* Effect.logInfo(`[KIE] pruned ${deleted} old task registry rows`)
  })

/** The `KieCallbacks` service. */
export class KieCallbacks extends Context.Service<KieCallbacks, KieCallbacksShape>()("zimage-bot/KieCallbacks") {
  /** The store on PostgreSQL, with its LISTEN fiber and hourly pruning. */
  static readonly layer = Layer.effect(
    KieCallbacks,
    Effect.gen(function*() {
      const sql = yield* SqlClient
      const pg = yield* PgClient.PgClient
      const signals = yield* makeCallbackSignals

      // One LISTEN connection per process, re-established forever. After every
      // (re)connect all subscribers re-check the table: a NOTIFY sent while we
      // were not listening is lost, the row is not.
      yield* listenForever({
        channel: CALLBACK_CHANNEL,
        marker: "[KIE]",
        fallback: "polling still works",
        onListening: signals.wakeAll,
        onNotification: signals.wake
      }).pipe(Effect.forkScoped)

      yield* repeatLogged(prunePass(sql), prunePolicy, {
        failing: (error) => `[KIE] pruning the task registry failed: ${error.message}`,
        recovered: "[KIE] pruning the task registry works again"
      }).pipe(Effect.delay(FIRST_PRUNE_AFTER), Effect.forkScoped)

      return KieCallbacks.of({
        newRef: Effect.sync(() => randomBytes(16).toString("hex")),
        registerPending: (ref) => register(sql, ref),
        bindTask: (ref, taskId) => bind(sql, ref, taskId),
        forget: (ref) => forget(sql, ref),
        record: (callback) =>
          record(pg, callback).pipe(
            // Tell local subscribers at once; the NOTIFY tells the other instances.
            Effect.tap((outcome) =>
              outcome === "stored" || outcome === "hint" ? signals.wake(callback.taskId) : Effect.void
            )
          ),
        lookup: (taskId) => lookup(sql, taskId),
        lookupMany: (taskIds) => lookupMany(sql, taskIds),
        findTaskIdByRef: (ref) => findTaskIdByRef(sql, ref),
        subscribe: signals.subscribe
      })
    })
  )
}

// ---------------------------------------------------------------------------
// Route

class BodyTooLarge extends Schema.TaggedError<BodyTooLarge>()("BodyTooLarge", {}) {}

const respond = (status: number, body: Record<string, unknown>) =>
  HttpServerResponse.jsonUnsafe(body, { status, headers: { "cache-control": "no-store" } })

/** Reads at most `limit` bytes; a bigger body (declared or chunked) fails with BodyTooLarge. */
const readBodyLimited = (request: HttpServerRequest.HttpServerRequest, limit: number) =>
  Effect.gen(function*() {
    const declared = request.headers["content-length"]
    if (declared !== undefined && Number(declared) > limit) return yield* new BodyTooLarge()
    const chunks: Array<Uint8Array> = []
    let total = 0
    yield* Stream.runForEach(request.stream, (chunk) => {
      total += chunk.length
      if (total > limit) return Effect.fail(new BodyTooLarge())
      chunks.push(chunk)
      return Effect.void
    })
    return Buffer.concat(chunks).toString("utf8")
  })

const terminalName = (state: TaskState): "success" | "fail" | undefined =>
  isTerminal(state) ? (state._tag === "Success" ? "success" : "fail") : undefined

/** The answer to a callback request, counted under its result. */
const answer = (result: Metrics.KieCallbackResult, status: number, body: Record<string, unknown>) =>
  Metric.update(Metric.withAttributes(Metrics.kieCallbacks, { result }), 1).pipe(
    Effect.as(respond(status, body))
  )

/** The signature check of a callback when KIE_WEBHOOK_HMAC_KEY is set: `undefined` when it passes. */
const signatureProblem = (
  request: HttpServerRequest.HttpServerRequest,
  hmacKey: Option.Option<string>,
  taskId: string
) =>
  Effect.gen(function*() {
    if (Option.isNone(hmacKey)) return undefined
    const check = checkSignature({
      key: hmacKey.value,
      taskId,
      signature: request.headers["x-webhook-signature"],
      timestamp: request.headers["x-webhook-timestamp"],
      nowMillis: yield* Clock.currentTimeMillis
    })
    return check === "ok" ? undefined : check
  })

/** The body as a decoded callback, or the answer to give instead. */
const readCallback = (request: HttpServerRequest.HttpServerRequest) =>
  Effect.gen(function*() {
    const text = yield* readBodyLimited(request, MAX_CALLBACK_BYTES)
    let json: unknown
    try {
      json = JSON.parse(text)
    } catch {
      return Result.fail(yield* answer("bad_request", 400, { error: "body is not JSON" }))
    }
    const decoded = decodeCallbackBody(json)
    if (Result.isSuccess(decoded)) return Result.succeed(decoded.success)
    yield* Effect.logWarning(`[KIE] callback rejected: ${decoded.failure.message}`)
    return Result.fail(yield* answer("bad_request", 400, { error: "not a Kie task callback" }))
  })

/**
 * `POST /kie/callback`. 413 over 64 KiB; 401 when KIE_WEBHOOK_HMAC_KEY is set
 * and the signature is missing, wrong or stale; 400 for a body that is not a
 * recordInfo-shaped callback; 503 when it cannot be stored (Kie retries);
 * otherwise 200, also for unknown tasks and repeats (ignored). An unknown
 * task costs one indexed read, no transaction and no log line (only the
 * metric counts it): anyone can POST here.
 */
const handleCallback = Effect.gen(function*() {
  const request = yield* HttpServerRequest.HttpServerRequest
  const config = yield* AppConfig
  const callbacks = yield* KieCallbacks
  const hmacKey = Option.map(config.kieWebhookHmacKey, Redacted.value)
  if (
    Option.isSome(hmacKey) &&
    (request.headers["x-webhook-signature"] === undefined || request.headers["x-webhook-timestamp"] === undefined)
  ) {
    yield* Effect.logWarning("[KIE] callback rejected: no signature headers")
    return yield* answer("unauthorized", 401, { error: "missing signature" })
  }
  const read = yield* readCallback(request)
  if (Result.isFailure(read)) return read.failure
  const { taskId, state, data } = read.success

  const problem = yield* signatureProblem(request, hmacKey, taskId)
  if (problem !== undefined) {
    yield* Effect.logWarning(`[KIE] callback rejected: signature ${problem}`, { taskId })
    return yield* answer("unauthorized", 401, { error: "bad signature" })
  }

  const stateName = terminalName(state)
  if (stateName === undefined) {
    // Kie calls back when a task finishes; an intermediate state has nothing to deliver.
    return yield* answer("not_final", 200, { ok: true, ignored: "not a final state" })
  }
  const ref = new URL(request.url, "http://callback.invalid").searchParams.get("ref") ?? undefined
  const outcome = yield* callbacks.record({
    taskId,
    ref,
    state: stateName,
    data,
    signatureVerified: Option.isSome(hmacKey)
  })
  if (outcome === "unknown") return yield* answer("unknown_task", 200, { ok: true, ignored: "unknown task" })
  yield* Effect.logInfo(`[KIE] callback ${outcome}`, { taskId, state: stateName })
  return yield* answer(outcome, 200, { ok: true })
}).pipe(
  Effect.catchTag("BodyTooLarge", () => answer("too_large", 413, { error: "body too large" })),
  Effect.catchTag("HttpServerError", () => answer("bad_request", 400, { error: "unreadable body" })),
  Effect.catchTag(
    "SqlError",
    (error) =>
      Effect.logWarning(`[KIE] callback could not be stored: ${error.message}`).pipe(
        Effect.andThen(answer("unavailable", 503, { error: "temporarily unavailable" }))
      )
  ),
  Effect.withSpan("KieCallback.receive")
)

/**
 * The `POST /kie/callback` route, in webhook mode only (PUBLIC_URL set). In
 * long-polling mode createTask sends no callBackUrl, so nothing legitimate
 * calls it: the path is not served at all (404), and a stray request costs
 * nothing.
 */
export const KieCallbackRoute = Layer.unwrap(Effect.gen(function*() {
  const config = yield* AppConfig
  return Option.isSome(config.publicUrl) ? HttpRouter.add("POST", CALLBACK_PATH, handleCallback) : Layer.empty
}))
