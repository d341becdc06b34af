/**
 * createTask: `POST /api/v1/jobs/createTask`, inside the process-wide
 * createTask budget (`KieRateBudget`), with the task registered in
 * `KieCallbacks` so its callback can be matched.
 *
 * Details: one call is checked (`validate`), gets a fresh `ref` (registered,
 * and in the callBackUrl in webhook mode), then makes attempts, each inside a
 * budget permit. An attempt's answer is decoded into a task id or an error;
 * retryable errors (429, 455, 5xx, no connection: nothing was created) are
 * retried by `kieRetryPolicy`. A request that may have reached Kie (timeout
 * or broken connection after sending, a gateway timeout, an unreadable
 * success) is `KieCreateTaskUncertain` and never retried: a retry could bill
 * a second task.
 *
 * | an attempt's answer                  | error                              | retried | registry row               |
 * | ------------------------------------ | ---------------------------------- | ------- | -------------------------- |
 * | a task id                            | (none)                             |         | gets the task id           |
 * | no connection made                   | `KieConnectionFailed`              | yes     | dropped if retries run out |
 * | 429 (the budget is penalized)        | `KieRateLimited`                   | yes     | dropped if retries run out |
 * | 455, 500 and other 5xx               | `KieMaintenance`, `KieServerError` | yes     | dropped if retries run out |
 * | timeout, broken connection, 504, 524 | `KieCreateTaskUncertain`           | never   | kept, for recovery         |
 * | a 200 we cannot read                 | `KieCreateTaskUncertain`           | never   | kept, for recovery         |
 * | any other code (401, 402, 422, 501…) | its error                          | no      | dropped                    |
 *
 * Gotchas: a caller's `beforeSend(ref)` runs inside the permit, just before
 * each attempt's request leaves; its failure ends the call before anything is
 * sent and is returned as is.
 */
import { Effect, Option, Result } from "effect"
import { HttpClientRequest } from "effect/http"
import { AppConfig } from "../platform/AppConfig.ts"
import { CALLBACK_PATH, KieCallbacks } from "./KieCallback.ts"
import {
  KieConnectionFailed,
  type KieCreateTaskError,
  KieCreateTaskUncertain,
  isKieError,
  KieValidationFailed
} from "./KieErrors.ts"
import { counted, type KieHttp, parseJson } from "./KieHttp.ts"
import { KieRateBudget } from "./KieRateBudget.ts"
import { retryRetryable } from "./KieRetry.ts"
import { decodeCreateTaskBody, MODEL } from "./KieSchema.ts"
import { findModel, modelInput } from "./ModelCatalog.ts"
import type { AspectRatio } from "../texts/Messages.ts"

/** Kie's createTask endpoint, below KIE_BASE_URL. */
export const CREATE_TASK_PATH = "/api/v1/jobs/createTask"

/** One createTask call. */
export interface CreateTaskRequest<E = never> {
  /** A model id of the catalog (`ModelCatalog.ts`); Z-Image when left out. */
  readonly model?: string | undefined
  readonly prompt: string
  /** A ratio the model offers; `auto` (or none) lets the model decide. */
  readonly aspectRatio: AspectRatio | undefined
  /** The pictures an editing model works on (URLs Kie can fetch, e.g. from Kie's upload API). */
  readonly imageUrls?: ReadonlyArray<string> | undefined
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

/** A createTask call: the task id, or why there is none. */
export type CreateTask = <E = never>(request: CreateTaskRequest<E>) => Effect.Effect<string, KieCreateTaskError | E>

/**
 * The createTask `input` for `request`, built from the model's catalog entry
 * and checked with its Schema: a shape the model would refuse is a
 * `KieValidationFailed` naming the model and the field, and nothing is sent.
 */
export const validate = (
  request: Pick<CreateTaskRequest, "model" | "prompt" | "aspectRatio" | "imageUrls">,
  nsfwChecker = true
): Effect.Effect<Readonly<Record<string, unknown>>, KieValidationFailed> => {
  const id = request.model ?? MODEL
  const model = findModel(id)
  if (model === undefined) {
    return Effect.fail(
      new KieValidationFailed({ operation: "createTask", message: `createTask not sent: unknown model ${id}` })
    )
  }
  return modelInput(model, {
    prompt: request.prompt,
    aspectRatio: request.aspectRatio,
    imageUrls: request.imageUrls ?? [],
    nsfwChecker
  })
}

/** A registry write that may fail: logged, and the call goes on (polling works without it). */
const bestEffort = <E extends { readonly message: string }>(effect: Effect.Effect<void, E>, what: string) =>
  effect.pipe(
    Effect.timeout("5 seconds"),
    Effect.catch((error) =>
      Effect.logWarning(`[KIE] ${what} failed (callbacks for it will be ignored): ${error.message}`)
    )
  )

/**
 * One createTask attempt: a task id, or the error it proves. `recoverable`:
 * the callBackUrl carries `ref`, so Kie's callback would reveal the task id.
 */
const makeAttempt = (http: KieHttp, budget: KieRateBudget["Service"]) => {
  const uncertain = (reason: KieCreateTaskUncertain["reason"], ref: string, recoverable: boolean, detail: string) =>
    new KieCreateTaskUncertain({
      reason,
      ref,
      recoverable,
      message: http.scrub(
        `Kie createTask may have created a task (${reason}: ${detail}); not retried to avoid a second billed task` +
          (recoverable ? `; its callback would reveal the task id (ref ${ref})` : "")
      )
    })

  return (
    body: Record<string, unknown>,
    ref: string,
    recoverable: boolean
  ): Effect.Effect<string, KieCreateTaskError> =>
    Effect.gen(function*() {
      const result = yield* http.exchange(
        HttpClientRequest.post(http.url(CREATE_TASK_PATH)).pipe(HttpClientRequest.bodyJsonUnsafe(body))
      )
      switch (result._tag) {
        case "TimedOut":
          return yield* uncertain("timeout", ref, recoverable, `no answer within ${http.timeoutMillis} ms`)
        case "Lost":
          return yield* uncertain("connection-lost", ref, recoverable, result.detail)
        case "NotSent":
          return yield* new KieConnectionFailed({
            operation: "createTask",
            message: http.scrub(`Kie createTask: no connection (${result.detail}); nothing was sent`)
          })
      }
      // A gateway timeout means a proxy gave up waiting for Kie, which may
      // have received the request: not proof that nothing was created.
      if (result.status === 504 || result.status === 524) {
        return yield* uncertain("gateway-timeout", ref, recoverable, `HTTP ${result.status}`)
      }
      const decoded = decodeCreateTaskBody(result.status, parseJson(result.text), result.text)
      if (Result.isSuccess(decoded)) return decoded.success
      const error = decoded.failure
      // A success status whose body we cannot read may stand for a created task.
      if (error._tag === "KieBadPayload") return yield* uncertain("unreadable-answer", ref, recoverable, error.message)
      if (error._tag === "KieRateLimited") yield* budget.penalize
      return yield* Effect.fail(error as KieCreateTaskError)
    }).pipe(Effect.mapError(http.scrubError), (attempt) => counted("createTask", attempt))
}

/** The createTask call over `http`, with the budget and registry of this process. */
export const makeCreateTask = (
  http: KieHttp
): Effect.Effect<CreateTask, never, AppConfig | KieRateBudget | KieCallbacks> =>
  Effect.gen(function*() {
    const config = yield* AppConfig
    const budget = yield* KieRateBudget
    const callbacks = yield* KieCallbacks
    const attemptOnce = makeAttempt(http, budget)

    const createTask: CreateTask = Effect.fn("Kie.createTask")(function*<E>(request: CreateTaskRequest<E>) {
      const input = yield* validate(request, config.kieNsfwChecker)
      const ref = yield* callbacks.newRef
      const ourCallBackUrl = Option.getOrUndefined(
        Option.map(config.publicUrl, (base) => `${base}${CALLBACK_PATH}?ref=${ref}`)
      )
      const callBackUrl = request.callBackUrl ?? ourCallBackUrl
      const recoverable = request.callBackUrl === undefined && ourCallBackUrl !== undefined
      const body = {
        model: request.model ?? MODEL,
        ...(callBackUrl === undefined ? {} : { callBackUrl }),
        input
      }
      // The registry row lets a callback be matched to this attempt even if
      // the answer is lost. Not essential: polling still works without it.
      yield* bestEffort(callbacks.registerPending(ref), "registering the task")
      const send = attemptOnce(body, ref, recoverable)
      const attempt: Effect.Effect<string, KieCreateTaskError | E> = request.beforeSend === undefined
        ? send
        : Effect.andThen(request.beforeSend(ref), send)
      const taskId = yield* budget.withPermit(attempt).pipe(
        Effect.tapError((error) =>
          isKieError(error) && error.retryable
            ? Effect.logWarning(`[KIE] ${error.message} (retryable: nothing was created)`)
            : Effect.void
        ),
        retryRetryable,
        Effect.tapError((error) =>
          isKieError(error) && error._tag === "KieCreateTaskUncertain"
            ? Effect.logError(`[KIE] ${error.message}`)
            : bestEffort(callbacks.forget(ref), "forgetting the task")
        )
      )
      yield* bestEffort(callbacks.bindTask(ref, taskId), "storing the task id")
      yield* Effect.logInfo("[KIE] task created", { taskId })
      return taskId
    })

    return createTask
  })
