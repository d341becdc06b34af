/**
 * Kie task registry and durable callback store (table `kie_tasks`), and the
 * `POST /kie/callback` route.
 *
 * Why durable: Render routes public traffic to every instance, so Kie's
 * callback may reach a PASSIVE instance while the generation is awaited on
 * the ACTIVE one. The route stores the callback in PostgreSQL and NOTIFYs
 * channel `kie_callback` with the task id; every instance LISTENs and wakes
 * its local waiters. A waiter reads the table *after* registering, so a
 * callback stored before anyone waited is found too, and a notification
 * missed while the listener reconnected is covered by a re-check of all
 * waiters after each reconnect (and by polling in `Kie.awaitResult`).
 *
 * Why a registry: every createTask first inserts a row with a random `ref`
 * that is also put into the callBackUrl (`?ref=`), then stores the task id.
 * This gives three things:
 * - "a callback for an unknown task is 200 and ignored": unknown means no
 *   row, so nobody can fill the table with junk;
 * - trust without an HMAC key: only Kie (and we) know a task's ref, so a
 *   callback carrying the right ref is genuine. One without it (or any
 *   callback when no ref matches) is only a *hint*: it wakes the waiter,
 *   which asks recordInfo itself instead of believing the body. With
 *   KIE_WEBHOOK_HMAC_KEY set, only signed callbacks get through at all;
 * - recovery: when createTask timed out after sending (KieCreateTaskUncertain),
 *   the task id is unknown, but if Kie did create the task its callback
 *   carries the ref, the row gets its task id, and `findTaskIdByRef` returns
 *   it: the result the user paid for is not lost.
 *
 * Idempotent: the first trusted callback of a task is kept; repeats (Kie may
 * send the same one several times) only count, and do not notify again.
 */
import { PgClient } from "@effect/sql-pg"
import {
  Clock,
  Context,
  Deferred,
  Duration,
  Effect,
  Layer,
  Option,
  PubSub,
  Queue,
  Redacted,
  Result,
  Schedule,
  Schema,
  Scope,
  Stream
} from "effect"
import { HttpRouter, HttpServerRequest, HttpServerResponse } from "effect/http"
import { SqlClient } from "effect/sql/SqlClient"
import type { SqlError } from "effect/sql/SqlError"
import { createHash, createHmac, randomBytes, timingSafeEqual } from "node:crypto"
import { AppConfig } from "../platform/AppConfig.ts"
import { decodeCallbackBody, isTerminal, type TaskState } from "./KieSchema.ts"
import { backoff } from "../platform/Retry.ts"

/** The NOTIFY channel; the payload is the task id. */
export const CALLBACK_CHANNEL = "kie_callback"
/** Callbacks are small (the prompt is at most 1000 characters); anything bigger is not Kie. */
export const MAX_CALLBACK_BYTES = 1024 * 1024
/** Signed callbacks older or newer than this are rejected (replay protection). */
export const SIGNATURE_MAX_AGE: Duration.Duration = Duration.minutes(5)
/** How long registry rows are kept: long enough for any generation and for an operator to look. */
export const REGISTRY_RETENTION: Duration.Duration = Duration.days(7)

/** Reconnecting the LISTEN connection: quick at first, then every 30 s at most. */
export const listenRetrySchedule = backoff("500 millis", "30 seconds")

/** How often old registry rows are deleted. */
export const prunePolicy = Schedule.spaced("1 hour")

// ---------------------------------------------------------------------------
// Migration

export const migration = Effect.gen(function*() {
  const sql = yield* SqlClient
  yield* sql`
    CREATE TABLE kie_tasks (
      ref text PRIMARY KEY,
      task_id text UNIQUE,
      created_at timestamptz NOT NULL DEFAULT now(),
      submitted_at timestamptz,
      callback_state text CHECK (callback_state IN ('success', 'fail')),
      callback_data jsonb,
      callback_trusted boolean,
      callback_count integer NOT NULL DEFAULT 0,
      callback_received_at timestamptz,
      callback_last_at timestamptz
    )
  `
  yield* sql`CREATE INDEX kie_tasks_created_at ON kie_tasks (created_at)`
})

// ---------------------------------------------------------------------------
// Store

export interface StoredCallback {
  readonly taskId: string
  readonly state: "success" | "fail"
  /** The callback's `data` (recordInfo-shaped); decode with `KieSchema.decodeRecordData`. */
  readonly data: unknown
  /** Signed with the HMAC key, or carrying the task's ref. Untrusted ones are hints only. */
  readonly trusted: boolean
  /** Callbacks received for the task, repeats included. */
  readonly count: number
  readonly receivedAtMillis: number
}

export type RecordOutcome =
  /** A trusted callback was stored and waiters were woken. */
  | "stored"
  /** An untrusted callback was stored as a hint and waiters were woken. */
  | "hint"
  /** The task already had a callback at least as trustworthy; only counted. */
  | "duplicate"
  /** No task of ours has this id (or ref): ignored. */
  | "unknown"

export interface RecordCallback {
  readonly taskId: string
  readonly ref: string | undefined
  readonly state: "success" | "fail"
  readonly data: Readonly<Record<string, unknown>>
  readonly signatureVerified: boolean
}

/** What waiters hear: a callback arrived for a task, or "re-check everything" after a reconnect. */
export type CallbackSignal =
  | { readonly _tag: "Arrived"; readonly taskId: string }
  | { readonly _tag: "Resync" }

export interface KieCallbacksShape {
  /** A new random ref for a createTask; also used in its callBackUrl. */
  readonly newRef: Effect.Effect<string>
  /** Records that a createTask with this ref is about to be sent. */
  readonly registerPending: (ref: string) => Effect.Effect<void, SqlError>
  /** Records the task id Kie gave the createTask with this ref. */
  readonly bindTask: (ref: string, taskId: string) => Effect.Effect<void, SqlError>
  /** Drops a ref whose createTask definitely created nothing. */
  readonly forget: (ref: string) => Effect.Effect<void, SqlError>
  /** Stores a decoded callback; idempotent. Wakes waiters on every instance. */
  readonly record: (callback: RecordCallback) => Effect.Effect<RecordOutcome, SqlError>
  /** The stored callback of a task, if any. */
  readonly lookup: (taskId: string) => Effect.Effect<Option.Option<StoredCallback>, SqlError>
  /** Stored callbacks of many tasks at once (for a batch poller). */
  readonly lookupMany: (taskIds: ReadonlyArray<string>) => Effect.Effect<ReadonlyMap<string, StoredCallback>, SqlError>
  /** The task id a callback revealed for a ref (recovery after KieCreateTaskUncertain). */
  readonly findTaskIdByRef: (ref: string) => Effect.Effect<Option.Option<string>, SqlError>
  /**
   * Registers interest in a task now and returns an effect that completes on
   * the next callback signal for it (or a resync). Register first, then read
   * the store, then wait: nothing is missed in between.
   */
  readonly nextSignal: (taskId: string) => Effect.Effect<Effect.Effect<void>, never, Scope.Scope>
  /** Every signal, for a batch poller. */
  readonly subscribe: Effect.Effect<PubSub.Subscription<CallbackSignal>, never, Scope.Scope>
  /** Deletes registry rows older than `olderThan`; returns how many. */
  readonly prune: (olderThan: Duration.Duration) => Effect.Effect<number, SqlError>
}

const StoredRow = Schema.Struct({
  task_id: Schema.String,
  callback_state: Schema.Literals(["success", "fail"]),
  callback_data: Schema.Unknown,
  callback_trusted: Schema.Boolean,
  callback_count: Schema.Finite,
  received_ms: Schema.Finite
})

const toStored = (row: unknown): Option.Option<StoredCallback> => {
  const decoded = Schema.decodeUnknownResult(StoredRow)(row)
  if (Result.isFailure(decoded)) return Option.none()
  const r = decoded.success
  return Option.some({
    taskId: r.task_id,
    state: r.callback_state,
    data: r.callback_data,
    trusted: r.callback_trusted,
    count: r.callback_count,
    receivedAtMillis: r.received_ms
  })
}

interface RegistryRow {
  readonly ref: string
  readonly task_id: string | null
  readonly callback_trusted: boolean | null
}

export class KieCallbacks extends Context.Service<KieCallbacks, KieCallbacksShape>()("zimage-bot/KieCallbacks") {
  /** The store on PostgreSQL, with its LISTEN fiber and hourly pruning. */
  static readonly layer = Layer.effect(
    KieCallbacks,
    Effect.gen(function*() {
      const sql = yield* SqlClient
      const pg = yield* PgClient.PgClient
      const signals = yield* PubSub.sliding<CallbackSignal>(4096)
      const waiters = new Map<string, Set<Deferred.Deferred<void>>>()

      const wake = (taskId: string) => {
        const set = waiters.get(taskId)
        if (set !== undefined) {
          waiters.delete(taskId)
          for (const d of set) Deferred.doneUnsafe(d, Effect.void)
        }
        return PubSub.publish(signals, { _tag: "Arrived", taskId })
      }
      const wakeAll = () => {
        const all = [...waiters.values()]
        waiters.clear()
        for (const set of all) for (const d of set) Deferred.doneUnsafe(d, Effect.void)
        return PubSub.publish(signals, { _tag: "Resync" })
      }

      const nextSignal = (taskId: string) =>
        Effect.acquireRelease(
          Effect.sync(() => {
            const deferred = Deferred.makeUnsafe<void>()
            let set = waiters.get(taskId)
            if (set === undefined) {
              set = new Set()
              waiters.set(taskId, set)
            }
            set.add(deferred)
            return deferred
          }),
          (deferred) =>
            Effect.sync(() => {
              const set = waiters.get(taskId)
              if (set !== undefined) {
                set.delete(deferred)
                if (set.size === 0) waiters.delete(taskId)
              }
            })
        ).pipe(Effect.map((deferred) => Deferred.await(deferred)))

      // One LISTEN connection per process, re-established forever. After every
      // (re)connect all waiters re-check the table: a NOTIFY sent while we were
      // not listening is lost, the row is not.
      // Logged once per outage, not once per attempt.
      let down = false
      yield* Effect.scoped(Effect.gen(function*() {
        const notifications = yield* pg.listen(CALLBACK_CHANNEL)
        if (down) yield* Effect.logInfo("[KIE] callback listener connected again")
        down = false
        yield* wakeAll()
        while (true) {
          const notification = yield* Queue.take(notifications)
          yield* wake(notification.payload)
        }
      })).pipe(
        Effect.tapError((error) =>
          down ? Effect.void : Effect.sync(() => {
            down = true
          }).pipe(
            Effect.andThen(Effect.logWarning(`[KIE] callback listener down, retrying (polling still works): ${error.message}`))
          )
        ),
        Effect.retry(listenRetrySchedule),
        Effect.forkScoped
      )

      yield* Effect.gen(function*() {
        const deleted = yield* prune(REGISTRY_RETENTION)
        if (deleted > 0) yield* Effect.logInfo(`[KIE] pruned ${deleted} old task registry rows`)
      }).pipe(
        Effect.catch((error) => Effect.logWarning(`[KIE] pruning the task registry failed: ${error.message}`)),
        Effect.repeat(prunePolicy),
        Effect.delay("1 minute"),
        Effect.forkScoped
      )

      const registerPending = (ref: string) =>
        Effect.asVoid(sql`INSERT INTO kie_tasks (ref) VALUES (${ref}) ON CONFLICT (ref) DO NOTHING`)

      const bindTask = (ref: string, taskId: string) =>
        Effect.asVoid(sql`
          INSERT INTO kie_tasks (ref, task_id, submitted_at) VALUES (${ref}, ${taskId}, now())
          ON CONFLICT (ref) DO UPDATE SET task_id = EXCLUDED.task_id, submitted_at = EXCLUDED.submitted_at
        `)

      const forget = (ref: string) => Effect.asVoid(sql`DELETE FROM kie_tasks WHERE ref = ${ref} AND task_id IS NULL`)

      const record = (callback: RecordCallback) =>
        sql.withTransaction(Effect.gen(function*() {
          let rows = yield* sql<RegistryRow>`
            SELECT ref, task_id, callback_trusted FROM kie_tasks WHERE task_id = ${callback.taskId} FOR UPDATE
          `
          if (rows.length === 0 && callback.ref !== undefined) {
            // The createTask answer was lost (KieCreateTaskUncertain): the ref finds the row.
            rows = yield* sql<RegistryRow>`
              SELECT ref, task_id, callback_trusted FROM kie_tasks
              WHERE ref = ${callback.ref} AND task_id IS NULL FOR UPDATE
            `
          }
          const row = rows[0]
          if (row === undefined) return "unknown" as const
          const trusted = callback.signatureVerified || (callback.ref !== undefined && callback.ref === row.ref)
          if (row.callback_trusted === true || (row.callback_trusted === false && !trusted)) {
            yield* sql`
              UPDATE kie_tasks SET callback_count = callback_count + 1, callback_last_at = now() WHERE ref = ${row.ref}
            `
            return "duplicate" as const
          }
          yield* sql`
            UPDATE kie_tasks SET
              task_id = ${callback.taskId},
              callback_state = ${callback.state},
              callback_data = ${pg.json(callback.data)},
              callback_trusted = ${trusted},
              callback_count = callback_count + 1,
              callback_received_at = now(),
              callback_last_at = now()
            WHERE ref = ${row.ref}
          `
          // Delivered to every listening instance when the transaction commits.
          yield* sql`SELECT pg_notify(${CALLBACK_CHANNEL}, ${callback.taskId})`
          return trusted ? "stored" as const : "hint" as const
        })).pipe(
          // Wake local waiters at once; the NOTIFY wakes the other instances.
          Effect.tap((outcome) => outcome === "stored" || outcome === "hint" ? wake(callback.taskId) : Effect.void)
        )

      const selectStored = (where: "one" | "many", ids: ReadonlyArray<string>) =>
        where === "one"
          ? sql`
            SELECT task_id, callback_state, callback_data, callback_trusted, callback_count,
                   (extract(epoch from callback_received_at) * 1000)::float8 AS received_ms
            FROM kie_tasks WHERE task_id = ${ids[0]!} AND callback_state IS NOT NULL
          `
          : sql`
            SELECT task_id, callback_state, callback_data, callback_trusted, callback_count,
                   (extract(epoch from callback_received_at) * 1000)::float8 AS received_ms
            FROM kie_tasks WHERE task_id IN ${sql.in(ids)} AND callback_state IS NOT NULL
          `

      const lookup = (taskId: string) =>
        Effect.map(selectStored("one", [taskId]), (rows) => (rows.length === 0 ? Option.none() : toStored(rows[0])))

      const lookupMany = (taskIds: ReadonlyArray<string>) =>
        taskIds.length === 0
          ? Effect.succeed(new Map<string, StoredCallback>())
          : Effect.map(selectStored("many", taskIds), (rows) => {
            const found = new Map<string, StoredCallback>()
            for (const row of rows) {
              const stored = toStored(row)
              if (Option.isSome(stored)) found.set(stored.value.taskId, stored.value)
            }
            return found
          })

      const findTaskIdByRef = (ref: string) =>
        Effect.map(
          sql<{ task_id: string | null }>`SELECT task_id FROM kie_tasks WHERE ref = ${ref}`,
          (rows) => Option.fromNullishOr(rows[0]?.task_id)
        )

      function prune(olderThan: Duration.Duration) {
        const seconds = Math.ceil(Duration.toMillis(olderThan) / 1000)
        return Effect.map(
          sql<{ ref: string }>`
            DELETE FROM kie_tasks WHERE created_at < now() - make_interval(secs => ${seconds}) RETURNING ref
          `,
          (rows) => rows.length
        )
      }

      return KieCallbacks.of({
        newRef: Effect.sync(() => randomBytes(16).toString("hex")),
        registerPending,
        bindTask,
        forget,
        record,
        lookup,
        lookupMany,
        findTaskIdByRef,
        nextSignal,
        subscribe: PubSub.subscribe(signals),
        prune
      })
    })
  )
}

// ---------------------------------------------------------------------------
// Signature

export type SignatureCheck = "ok" | "missing" | "malformed-timestamp" | "stale" | "mismatch"

/** `base64(HMAC-SHA256(taskId + "." + timestamp, key))`, as Kie signs callbacks. */
export const expectedSignature = (key: string, taskId: string, timestamp: string): string =>
  createHmac("sha256", key).update(`${taskId}.${timestamp}`).digest("base64")

/** Compares in constant time, whatever the lengths (hashing first hides them). */
export const constantTimeEquals = (a: string, b: string): boolean =>
  timingSafeEqual(createHash("sha256").update(a).digest(), createHash("sha256").update(b).digest())

/**
 * Checks `X-Webhook-Signature` / `X-Webhook-Timestamp` (Unix seconds) for a
 * task at `nowMillis`; timestamps further than `maxAge` from now either way
 * are rejected.
 */
export const checkSignature = (options: {
  readonly key: string
  readonly taskId: string
  readonly signature: string | undefined
  readonly timestamp: string | undefined
  readonly nowMillis: number
  readonly maxAge?: Duration.Duration
}): SignatureCheck => {
  const { signature, timestamp } = options
  if (signature === undefined || signature === "" || timestamp === undefined || timestamp === "") return "missing"
  if (!/^\d{1,12}$/.test(timestamp)) return "malformed-timestamp"
  const ageMillis = Math.abs(options.nowMillis - Number(timestamp) * 1000)
  if (ageMillis > Duration.toMillis(options.maxAge ?? SIGNATURE_MAX_AGE)) return "stale"
  return constantTimeEquals(expectedSignature(options.key, options.taskId, timestamp), signature.trim())
    ? "ok"
    : "mismatch"
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

/**
 * `POST /kie/callback`. 413 over 1 MiB; 401 when KIE_WEBHOOK_HMAC_KEY is set
 * and the signature is missing, wrong or stale; 400 for a body that is not a
 * recordInfo-shaped callback; 503 when it cannot be stored (Kie retries);
 * otherwise 200, also for unknown tasks and repeats (ignored).
 */
export const KieCallbackRoute = HttpRouter.add(
  "POST",
  "/kie/callback",
  Effect.gen(function*() {
    const request = yield* HttpServerRequest.HttpServerRequest
    const config = yield* AppConfig
    const callbacks = yield* KieCallbacks
    const hmacKey = Option.map(config.kieWebhookHmacKey, Redacted.value)
    const signature = request.headers["x-webhook-signature"]
    const timestamp = request.headers["x-webhook-timestamp"]
    if (Option.isSome(hmacKey) && (signature === undefined || timestamp === undefined)) {
      yield* Effect.logWarning("[KIE] callback rejected: no signature headers")
      return respond(401, { error: "missing signature" })
    }

    const text = yield* readBodyLimited(request, MAX_CALLBACK_BYTES)
    let json: unknown
    try {
      json = JSON.parse(text)
    } catch {
      return respond(400, { error: "body is not JSON" })
    }
    const decoded = decodeCallbackBody(json)
    if (Result.isFailure(decoded)) {
      yield* Effect.logWarning(`[KIE] callback rejected: ${decoded.failure.message}`)
      return respond(400, { error: "not a Kie task callback" })
    }
    const { taskId, state, data } = decoded.success

    if (Option.isSome(hmacKey)) {
      const check = checkSignature({
        key: hmacKey.value,
        taskId,
        signature,
        timestamp,
        nowMillis: yield* Clock.currentTimeMillis
      })
      if (check !== "ok") {
        yield* Effect.logWarning(`[KIE] callback rejected: signature ${check}`, { taskId })
        return respond(401, { error: "bad signature" })
      }
    }

    const stateName = terminalName(state)
    if (stateName === undefined) {
      // Kie calls back when a task finishes; an intermediate state has nothing to deliver.
      return respond(200, { ok: true, ignored: "not a final state" })
    }
    const ref = new URL(request.url, "http://callback.invalid").searchParams.get("ref") ?? undefined
    const outcome = yield* callbacks.record({
      taskId,
      ref,
      state: stateName,
      data,
      signatureVerified: Option.isSome(hmacKey)
    })
    yield* outcome === "unknown"
      ? Effect.logInfo("[KIE] callback for an unknown task ignored", { taskId })
      : Effect.logInfo(`[KIE] callback ${outcome}`, { taskId, state: stateName })
    return respond(200, outcome === "unknown" ? { ok: true, ignored: "unknown task" } : { ok: true })
  }).pipe(
    Effect.catchTag("BodyTooLarge", () => Effect.succeed(respond(413, { error: "body too large" }))),
    Effect.catchTag("HttpServerError", () => Effect.succeed(respond(400, { error: "unreadable body" }))),
    Effect.catchTag("SqlError", (error) =>
      Effect.logWarning(`[KIE] callback could not be stored: ${error.message}`).pipe(
        Effect.as(respond(503, { error: "temporarily unavailable" }))
      ))
  )
)
