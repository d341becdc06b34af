/**
 * `Kie`: the only code that talks to Kie.ai (Market "jobs" API, model
 * `z-image`). See `shared/reference/kie-api.md` for the facts this follows.
 *
 * - `createTask` → `POST /api/v1/jobs/createTask`, inside the process-wide
 *   createTask budget (`KieRateBudget`). Retried with `kieRetryPolicy` only
 *   on answers that prove no task was created (429, 455, 5xx, no connection).
 *   A request that may have reached Kie (timeout or broken connection after
 *   sending, a gateway timeout, an unreadable success) fails with
 *   `KieCreateTaskUncertain` and is never retried: a retry could bill a
 *   second task.
 *   A caller's `beforeSend(ref)` runs inside the permit, just before the
 *   request leaves (the generation engine records `submitting` there).
 * - `getTask` → `GET /api/v1/jobs/recordInfo`, decoded into a tagged state;
 *   freely retried; `recordInfo is null` counts as still waiting.
 *   `getTaskOnce` is one request without retries, for a batch poller with
 *   its own schedule and rate limit.
 * - `awaitResult` polls every KIE_POLL_INTERVAL_MS under a
 *   GENERATION_TIMEOUT_MS deadline and finishes early when a callback for the
 *   task arrives (on any instance: see `KieCallback.ts`).
 *
 * The API key is only ever put into the Authorization header; every message
 * we build is scrubbed of it anyway, and no HTTP client error object (which
 * holds the request and its headers) is kept in our errors.
 */
import * as NodeHttpClient from "@effect/platform-node/NodeHttpClient"
import { Context, Duration, Effect, Layer, Option, Redacted, Result, Schedule } from "effect"
import { backoff } from "../platform/Retry.ts"
import { HttpClient, HttpClientRequest } from "effect/http"
import type * as HttpClientError from "effect/http/HttpClientError"
import { AppConfig } from "../platform/AppConfig.ts"
import { version } from "../platform/Health.ts"
import { KieCallbacks } from "./KieCallback.ts"
import {
  KieConnectionFailed,
  KieCreateTaskUncertain,
  type KieAwaitError,
  type KieCreateTaskError,
  type KieError,
  KieGenerationTimeout,
  type KieGetTaskError,
  type KieOperation,
  KieRequestTimeout,
  KieTaskFailed,
  KieTransportError,
  isKieError,
  KieValidationFailed
} from "./KieErrors.ts"
import { KieRateBudget } from "./KieRateBudget.ts"
import * as Metrics from "../platform/Metrics.ts"
import {
  AspectRatio,
  clip,
  decodeCreateTaskBody,
  decodeRecordData,
  decodeRecordInfoBody,
  isTerminal,
  MAX_PROMPT_LENGTH,
  MODEL,
  type TaskState,
  type TaskSucceeded,
  type TerminalTaskState
} from "./KieSchema.ts"

export * from "./KieErrors.ts"
export * from "./KieSchema.ts"

/**
 * Retries of one Kie request: exponential from 1 s (1, 2, 4 s), each delay
 * jittered by ±20 % so instances do not retry in lockstep, at most 3 retries.
 * Applied only to errors whose `retryable` is true.
 */
export const kieRetryPolicy = backoff("1 second", "4 seconds").pipe(Schedule.upTo({ times: 3 }))

/**
 * Sent explicitly: Cloudflare in front of Kie is reported to reject requests
 * without a browser-like User-Agent with a 403 that looks like an auth error.
 */
export const USER_AGENT = `Mozilla/5.0 (compatible; zimage-bot/${version})`

export const CREATE_TASK_PATH = "/api/v1/jobs/createTask"
export const RECORD_INFO_PATH = "/api/v1/jobs/recordInfo"
export const CALLBACK_PATH = "/kie/callback"

export interface CreateTaskRequest<E = never> {
  readonly prompt: string
  readonly aspectRatio: AspectRatio
  /**
   * Where Kie should POST the result. By default `PUBLIC_URL/kie/callback?ref=…`
   * in webhook mode and none in polling mode.
   */
  readonly callBackUrl?: string | undefined
  /**
   * Runs inside the createTask budget's permit, right before each attempt's
   * request is sent, with the call's `ref` (the same for every attempt of one
   * call; it is in the callBackUrl in webhook mode). Lets a caller record
   * durably that a request is about to leave, *after* waiting for the
   * budget: a crash while waiting leaves nothing recorded. A failure stops
   * the call before anything is sent and is returned as is (never retried).
   */
  readonly beforeSend?: ((ref: string) => Effect.Effect<void, E>) | undefined
}

export interface KieShape {
  /** Creates a Z-Image task and returns its id. Waits for a slot of the createTask budget. */
  readonly createTask: <E = never>(request: CreateTaskRequest<E>) => Effect.Effect<string, KieCreateTaskError | E>
  /** One recordInfo call (with retries): the task's current state. */
  readonly getTask: (taskId: string) => Effect.Effect<TaskState, KieGetTaskError>
  /**
   * Exactly one recordInfo request, no retries: for a caller that runs its
   * own schedule and its own recordInfo rate limit (the generation engine).
   */
  readonly getTaskOnce: (taskId: string) => Effect.Effect<TaskState, KieGetTaskError>
  /**
   * Waits until the task succeeds (polling and callbacks), within
   * GENERATION_TIMEOUT_MS. A `fail` state is `KieTaskFailed`.
   */
  readonly awaitResult: (taskId: string) => Effect.Effect<TaskSucceeded, KieAwaitError>
  /**
   * After `KieCreateTaskUncertain` in webhook mode: the task id Kie's callback
   * revealed for the attempt's `ref`, if it did create a task.
   */
  readonly recoverTask: (ref: string) => Effect.Effect<Option.Option<string>>
}

// ---------------------------------------------------------------------------
// Transport classification

/** Error codes that mean no connection was made, so nothing was sent. */
const NOT_CONNECTED_CODES = new Set([
  "ECONNREFUSED",
  "ENOTFOUND",
  "EAI_AGAIN",
  "EAI_NONAME",
  "EHOSTUNREACH",
  "ENETUNREACH",
  "EHOSTDOWN",
  "ENETDOWN",
  "EADDRNOTAVAIL",
  "UND_ERR_CONNECT_TIMEOUT",
  "ERR_TLS_CERT_ALTNAME_INVALID",
  "CERT_HAS_EXPIRED",
  "UNABLE_TO_VERIFY_LEAF_SIGNATURE",
  "DEPTH_ZERO_SELF_SIGNED_CERT",
  "SELF_SIGNED_CERT_IN_CHAIN"
])

/** The error codes found on a cause, its `cause` chain and an AggregateError's members. */
const errorCodes = (cause: unknown, depth = 0): Array<string> => {
  if (depth > 4 || typeof cause !== "object" || cause === null) return []
  const own = (cause as { code?: unknown }).code
  const codes = typeof own === "string" ? [own] : []
  const nested = (cause as { cause?: unknown }).cause
  const members = (cause as { errors?: unknown }).errors
  return [
    ...codes,
    ...errorCodes(nested, depth + 1),
    ...(Array.isArray(members) ? members.flatMap((m) => errorCodes(m, depth + 1)) : [])
  ]
}

const describeCause = (cause: unknown): string => {
  const codes = errorCodes(cause)
  const message = typeof cause === "object" && cause !== null && typeof (cause as { message?: unknown }).message === "string"
    ? (cause as { message: string }).message
    : ""
  return clip([codes[0], message].filter((s) => s !== undefined && s !== "").join(" ") || "unknown transport error", 200)
}

/** What happened to one HTTP exchange, before looking at the body. */
type Exchange =
  | { readonly _tag: "Answered"; readonly status: number; readonly text: string }
  | { readonly _tag: "NotSent"; readonly detail: string }
  | { readonly _tag: "Lost"; readonly detail: string }
  | { readonly _tag: "TimedOut" }

const classifyClientError = (error: HttpClientError.HttpClientError): Exchange => {
  const reason = error.reason
  switch (reason._tag) {
    case "InvalidUrlError":
    case "EncodeError":
      return { _tag: "NotSent", detail: `${reason._tag}: ${describeCause(reason.cause)}` }
    case "TransportError": {
      const codes = errorCodes(reason.cause)
      return codes.some((code) => NOT_CONNECTED_CODES.has(code))
        ? { _tag: "NotSent", detail: describeCause(reason.cause) }
        : { _tag: "Lost", detail: describeCause(reason.cause) }
    }
    default:
      // The response head arrived but its body could not be read.
      return { _tag: "Lost", detail: `the answer broke off (HTTP ${reason.response.status})` }
  }
}

// ---------------------------------------------------------------------------

const characters = (s: string) => [...s].length

export const make = Effect.gen(function*() {
  const config = yield* AppConfig
  const budget = yield* KieRateBudget
  const callbacks = yield* KieCallbacks
  const client = yield* HttpClient.HttpClient
  const apiKey = Redacted.value(config.kieApiKey)
  const timeoutMillis = Duration.toMillis(config.kieRequestTimeout)

  /** Belt and braces: no message we build may contain the key. */
  const scrub = (text: string) => (apiKey.length >= 6 ? text.split(apiKey).join("<redacted>") : text)

  /** The same error with the key cut out of its message (Kie could echo it back in `msg`). */
  function scrubError<E extends KieError>(error: E): E {
    const clean = scrub(error.message)
    return clean === error.message
      ? error
      : Object.assign(Object.create(Object.getPrototypeOf(error)), error, { message: clean })
  }

  const withKey = (request: HttpClientRequest.HttpClientRequest) =>
    request.pipe(
      HttpClientRequest.bearerToken(config.kieApiKey),
      HttpClientRequest.setHeader("user-agent", USER_AGENT),
      HttpClientRequest.acceptJson
    )

  /** Sends one request under the per-request timeout and reads the whole answer. */
  const exchange = (request: HttpClientRequest.HttpClientRequest): Effect.Effect<Exchange> =>
    client.execute(withKey(request)).pipe(
      Effect.flatMap((response) => Effect.map(response.text, (text) => ({ _tag: "Answered", status: response.status, text }) as Exchange)),
      Effect.timeoutOrElse({
        duration: config.kieRequestTimeout,
        orElse: () => Effect.succeed<Exchange>({ _tag: "TimedOut" })
      }),
      Effect.catch((error) => Effect.succeed(classifyClientError(error)))
    )

  const parseJson = (text: string): unknown => {
    try {
      return JSON.parse(text)
    } catch {
      return undefined
    }
  }

  // -------------------------------------------------------------------------
  // createTask

  const validate = (request: Pick<CreateTaskRequest, "prompt" | "aspectRatio">): Effect.Effect<void, KieValidationFailed> => {
    const length = characters(request.prompt)
    const problem = request.prompt.trim() === ""
      ? "the prompt is empty"
      : length > MAX_PROMPT_LENGTH
      ? `the prompt has ${length} characters, Kie accepts at most ${MAX_PROMPT_LENGTH}`
      : !(AspectRatio.literals as ReadonlyArray<string>).includes(request.aspectRatio)
      ? `aspect ratio ${clip(String(request.aspectRatio), 20)} is not one of ${AspectRatio.literals.join(", ")}`
      : undefined
    return problem === undefined
      ? Effect.void
      : Effect.fail(new KieValidationFailed({ operation: "createTask", message: `createTask not sent: ${problem}` }))
  }

  /** `recoverable`: the callBackUrl carries `ref`, so Kie's callback would reveal the task id. */
  const uncertain = (reason: KieCreateTaskUncertain["reason"], ref: string, recoverable: boolean, detail: string) =>
    new KieCreateTaskUncertain({
      reason,
      ref,
      recoverable,
      message: scrub(
        `Kie createTask may have created a task (${reason}: ${detail}); not retried to avoid a second billed task` +
          (recoverable ? `; its callback would reveal the task id (ref ${ref})` : "")
      )
    })

  /**
   * Counts one request sent to Kie in `zimage_kie_calls_total{method,result}`:
   * `result` is "ok" or the error's tag (`insufficient_credits`,
   * `rate_limited`, `create_task_uncertain`, …). Each retry is a request of its
   * own; a request refused before sending (validation) is not counted.
   */
  const counted = <A, E>(method: "createTask" | "recordInfo", request: Effect.Effect<A, E>) =>
    request.pipe(Effect.onExit(Metrics.countExit(Metrics.kieCalls, method, "Kie")))

  /** One createTask attempt: a task id, or the error it proves. */
  const createOnce = (
    body: Record<string, unknown>,
    ref: string,
    recoverable: boolean
  ): Effect.Effect<string, KieCreateTaskError> =>
    Effect.gen(function*() {
      const result = yield* exchange(
        HttpClientRequest.post(`${config.kieBaseUrl}${CREATE_TASK_PATH}`).pipe(HttpClientRequest.bodyJsonUnsafe(body))
      )
      switch (result._tag) {
        case "TimedOut":
          return yield* uncertain("timeout", ref, recoverable, `no answer within ${timeoutMillis} ms`)
        case "Lost":
          return yield* uncertain("connection-lost", ref, recoverable, result.detail)
        case "NotSent":
          return yield* new KieConnectionFailed({
            operation: "createTask",
            message: scrub(`Kie createTask: no connection (${result.detail}); nothing was sent`)
          })
      }
      // A gateway timeout means a proxy gave up waiting for Kie, which may
      // have received the request: not proof that nothing was created.
      if (result.status === 504 || result.status === 524) {
        return yield* uncertain("gateway-timeout", ref, recoverable, `HTTP ${result.status}`)
      }
      const json = parseJson(result.text)
      const decoded = decodeCreateTaskBody(result.status, json, result.text)
      if (Result.isSuccess(decoded)) return decoded.success
      const error = decoded.failure
      // A success status whose body we cannot read may stand for a created task.
      if (error._tag === "KieBadPayload") return yield* uncertain("unreadable-answer", ref, recoverable, error.message)
      if (error._tag === "KieRateLimited") yield* budget.penalize
      return yield* Effect.fail(error as KieCreateTaskError)
    }).pipe(Effect.mapError(scrubError), (attempt) => counted("createTask", attempt))

  const createTask = <E = never>(request: CreateTaskRequest<E>): Effect.Effect<string, KieCreateTaskError | E> =>
    Effect.gen(function*() {
      yield* validate(request)
      const ref = yield* callbacks.newRef
      const ourCallBackUrl = Option.getOrUndefined(
        Option.map(config.publicUrl, (base) => `${base}${CALLBACK_PATH}?ref=${ref}`)
      )
      const callBackUrl = request.callBackUrl ?? ourCallBackUrl
      const recoverable = request.callBackUrl === undefined && ourCallBackUrl !== undefined
      const body = {
        model: MODEL,
        ...(callBackUrl === undefined ? {} : { callBackUrl }),
        input: {
          prompt: request.prompt,
          aspect_ratio: request.aspectRatio,
          nsfw_checker: config.kieNsfwChecker
        }
      }
      // The registry row lets a callback be matched to this attempt even if
      // the answer is lost. Not essential: polling still works without it.
      yield* bestEffort(callbacks.registerPending(ref), "registering the task")
      const send = createOnce(body, ref, recoverable)
      const attempt: Effect.Effect<string, KieCreateTaskError | E> = request.beforeSend === undefined
        ? send
        : Effect.andThen(request.beforeSend(ref), send)
      const taskId = yield* budget.withPermit(attempt).pipe(
        Effect.tapError((error) =>
          isKieError(error) && error.retryable
            ? Effect.logWarning(`[KIE] ${error.message} (retryable: nothing was created)`)
            : Effect.void
        ),
        Effect.retry({ schedule: kieRetryPolicy, while: (error) => isKieError(error) && error.retryable }),
        Effect.tapError((error) =>
          isKieError(error) && error._tag === "KieCreateTaskUncertain"
            ? Effect.logError(`[KIE] ${error.message}`)
            : bestEffort(callbacks.forget(ref), "forgetting the task")
        )
      )
      yield* bestEffort(callbacks.bindTask(ref, taskId), "storing the task id")
      yield* Effect.logInfo("[KIE] task created", { taskId })
      return taskId
    }).pipe(Effect.withSpan("Kie.createTask"))

  const bestEffort = <E extends { readonly message: string }>(effect: Effect.Effect<void, E>, what: string) =>
    effect.pipe(
      Effect.timeout("5 seconds"),
      Effect.catch((error) => Effect.logWarning(`[KIE] ${what} failed (callbacks for it will be ignored): ${error.message}`))
    )

  // -------------------------------------------------------------------------
  // getTask

  const getOnce = (taskId: string): Effect.Effect<TaskState, KieGetTaskError> =>
    Effect.gen(function*() {
      const operation: KieOperation = "recordInfo"
      const result = yield* exchange(
        HttpClientRequest.get(`${config.kieBaseUrl}${RECORD_INFO_PATH}`).pipe(
          HttpClientRequest.setUrlParam("taskId", taskId)
        )
      )
      switch (result._tag) {
        case "TimedOut":
          return yield* new KieRequestTimeout({
            operation,
            timeoutMillis,
            message: `Kie recordInfo: no answer within ${timeoutMillis} ms`
          })
        case "Lost":
          return yield* new KieTransportError({ operation, message: scrub(`Kie recordInfo: ${result.detail}`) })
        case "NotSent":
          return yield* new KieConnectionFailed({ operation, message: scrub(`Kie recordInfo: no connection (${result.detail})`) })
      }
      const decoded = decodeRecordInfoBody(taskId, result.status, parseJson(result.text), result.text)
      if (Result.isSuccess(decoded)) return decoded.success
      return yield* Effect.fail(decoded.failure as KieGetTaskError)
    }).pipe(Effect.mapError(scrubError), (attempt) => counted("recordInfo", attempt))

  const getTask = Effect.fn("Kie.getTask")(function*(taskId: string) {
    return yield* getOnce(taskId).pipe(
      Effect.retry({ schedule: kieRetryPolicy, while: (error) => error.retryable })
    )
  })

  // -------------------------------------------------------------------------
  // awaitResult

  /** A state from a stored callback, if it decodes (a bad one falls back to polling). */
  const storedState = (taskId: string, data: unknown): TerminalTaskState | undefined => {
    const decoded = decodeRecordData("recordInfo", taskId, data)
    return Result.isSuccess(decoded) && isTerminal(decoded.success) ? decoded.success : undefined
  }

  /**
   * Finishes when a callback settles the task: a trusted one is believed, an
   * untrusted one (a hint) makes us ask recordInfo. Never fails; storage
   * errors leave the work to polling.
   */
  const viaCallbacks = (taskId: string): Effect.Effect<TerminalTaskState> =>
    Effect.gen(function*() {
      let hintsSeen = 0
      while (true) {
        const settled = yield* Effect.scoped(Effect.gen(function*() {
          const signal = yield* callbacks.nextSignal(taskId)
          const stored = yield* callbacks.lookup(taskId).pipe(
            Effect.catch(() => Effect.succeed(Option.none()))
          )
          if (Option.isSome(stored)) {
            const callback = stored.value
            if (callback.trusted) {
              const state = storedState(taskId, callback.data)
              if (state !== undefined) return state
            } else if (callback.count > hintsSeen) {
              hintsSeen = callback.count
              const checked = yield* getTask(taskId).pipe(Effect.option)
              if (Option.isSome(checked) && isTerminal(checked.value)) return checked.value
            }
          }
          yield* signal
          return undefined
        }))
        if (settled !== undefined) return settled
      }
    })

  /** Polls until a final state; transient errors wait for the next round. */
  const viaPolling = (taskId: string): Effect.Effect<TerminalTaskState, KieGetTaskError> =>
    getTask(taskId).pipe(
      Effect.map((state): TaskState | undefined => state),
      Effect.catchIf(
        (error) => error.retryable,
        (error) => Effect.logWarning(`[KIE] polling ${taskId}: ${error.message}`).pipe(Effect.as(undefined))
      ),
      Effect.repeat({
        schedule: Schedule.spaced(config.kiePollInterval),
        until: (state) => state !== undefined && isTerminal(state)
      }),
      Effect.map((state) => state as TerminalTaskState)
    )

  const awaitResult = Effect.fn("Kie.awaitResult")(function*(taskId: string) {
    const timeout = config.generationTimeout
    const final = yield* Effect.raceFirst(viaPolling(taskId), viaCallbacks(taskId)).pipe(
      Effect.timeoutOrElse({
        duration: timeout,
        orElse: () =>
          Effect.fail(
            new KieGenerationTimeout({
              taskId,
              timeoutMillis: Duration.toMillis(timeout),
              message: `Kie task ${taskId} did not finish within ${Duration.format(timeout)}`
            })
          )
      })
    )
    if (final._tag === "Fail") {
      return yield* new KieTaskFailed({
        taskId,
        failCode: final.failCode,
        failMsg: final.failMsg,
        message: scrub(`Kie task ${taskId} failed: ${final.failCode} ${clip(final.failMsg, 200)}`.trim())
      })
    }
    return final
  })

  const recoverTask = (ref: string) =>
    callbacks.findTaskIdByRef(ref).pipe(Effect.catch(() => Effect.succeed(Option.none<string>())))

  const getTaskOnce = (taskId: string) => getOnce(taskId).pipe(Effect.withSpan("Kie.getTaskOnce"))

  return Kie.of({ createTask, getTask, getTaskOnce, awaitResult, recoverTask })
})

export class Kie extends Context.Service<Kie, KieShape>()("zimage-bot/Kie") {
  /** On the HttpClient it is given (tests may bring their own). */
  static readonly layerNoHttp = Layer.effect(Kie, make)

  /**
   * On its own undici connection pool. Needs `AppConfig`, `KieCallbacks` and
   * the process-wide `KieRateBudget`.
   */
  static readonly layer = Layer.unwrap(Effect.gen(function*() {
    const config = yield* AppConfig
    // Give up connecting well before the request timeout, so a connect hang
    // is reported as "nothing sent" (retryable) rather than as a timeout
    // after which we could not know whether createTask arrived.
    const connectTimeout = Math.max(100, Math.min(10_000, Math.floor(Duration.toMillis(config.kieRequestTimeout) / 2)))
    return Kie.layerNoHttp.pipe(
      Layer.provide(NodeHttpClient.layerUndiciOptions({ connect: { timeout: connectTimeout } }))
    )
  }))
}

export type { KieAwaitError, KieCreateTaskError, KieError, KieGetTaskError }
