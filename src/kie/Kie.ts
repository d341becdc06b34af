/**
 * `Kie`: the only code that talks to Kie.ai (Market "jobs" API, model
 * `z-image`); the facts it follows are in `docs/external-apis.md`.
 *
 * - `createTask` → `POST /api/v1/jobs/createTask`, inside the process-wide
 *   createTask budget (`KieRateBudget`). Retried with `kieRetryPolicy` only
 *   on answers that prove no task was created (429, 455, 5xx, no connection).
 *   A request that may have reached Kie (timeout or broken connection after
 *   sending, a gateway timeout, an unreadable success) fails with
 *   `KieCreateTaskUncertain` and is never retried: a retry could bill a
 *   second task. A caller's `beforeSend(ref)` runs inside the permit, just
 *   before the request leaves (the generation engine records `submitting`
 *   there).
 * - `getTaskOnce` → `GET /api/v1/jobs/recordInfo`, decoded into a tagged
 *   state; one request without retries, for a batch poller with its own
 *   schedule and rate limit. `recordInfo is null` counts as still waiting.
 * - `recoverTask`: after `KieCreateTaskUncertain`, the task id a callback
 *   revealed.
 *
 * The parts, each usable alone:
 * - `KieHttp.ts`: one HTTP exchange (key, User-Agent, timeout) and what
 *   happened to it; scrubbing the key out of messages;
 * - `KieCreateTask.ts`: one createTask call (its attempts, the budget, the
 *   registry);
 * - `KieRecordInfo.ts`: one recordInfo request;
 * - `KieRetry.ts`: the retry decision of createTask (`kieRetryPolicy`,
 *   `retryable`);
 * - `KieErrors.ts`, `KieSchema.ts`: the errors and the decoding of answers.
 */
import { Context, Duration, Effect, Layer, Option } from "effect"
import { AppConfig } from "../platform/AppConfig.ts"
import * as ConnectTimeoutAgents from "../platform/ConnectTimeoutAgents.ts"
import { KieCallbacks } from "./KieCallback.ts"
import { type CreateTask, makeCreateTask } from "./KieCreateTask.ts"
import type { KieCreateTaskError, KieError, KieGetTaskError } from "./KieErrors.ts"
import { makeKieHttp } from "./KieHttp.ts"
import { makeRecordInfo } from "./KieRecordInfo.ts"
import { makeUploadFile, type UploadFile } from "./KieUpload.ts"
import type { TaskState } from "./KieSchema.ts"

export * from "./KieErrors.ts"
export * from "./KieSchema.ts"
export type { CreateTaskRequest } from "./KieCreateTask.ts"
export { kieRetryPolicy } from "./KieRetry.ts"
export { KieUploadFailed } from "./KieUpload.ts"

/** The Kie.ai client. */
export interface KieShape {
  /** Creates a Z-Image task and returns its id. Waits for a slot of the createTask budget. */
  readonly createTask: CreateTask
  /**
   * Exactly one recordInfo request, no retries: for a caller that runs its
   * own schedule and its own recordInfo rate limit (the generation engine).
   */
  readonly getTaskOnce: (taskId: string) => Effect.Effect<TaskState, KieGetTaskError>
  /**
   * After `KieCreateTaskUncertain` in webhook mode: the task id Kie's callback
   * revealed for the attempt's `ref`, if it did create a task.
   */
  readonly recoverTask: (ref: string) => Effect.Effect<Option.Option<string>>
  /** Uploads a picture to Kie's file API (KIE_UPLOAD_BASE_URL); its URL, for an editing model. */
  readonly uploadFile: UploadFile
}

/** The client on the `HttpClient` it is given. */
export const make = Effect.gen(function*() {
  const callbacks = yield* KieCallbacks
  const config = yield* AppConfig
  const http = yield* makeKieHttp
  const createTask = yield* makeCreateTask(http)
  const recoverTask = (ref: string) =>
    callbacks.findTaskIdByRef(ref).pipe(Effect.catch(() => Effect.succeed(Option.none<string>())))
  return Kie.of({
    createTask,
    getTaskOnce: makeRecordInfo(http),
    recoverTask,
    uploadFile: makeUploadFile(http, config)
  })
})

/** The `Kie` service. */
export class Kie extends Context.Service<Kie, KieShape>()("zimage-bot/Kie") {
  /** On the HttpClient it is given (tests may bring their own). */
  static readonly layerNoHttp = Layer.effect(Kie, make)

  /**
   * On its own keep-alive connections (`platform/ConnectTimeoutAgents.ts`). Needs `AppConfig`, `KieCallbacks` and
   * the process-wide `KieRateBudget`.
   */
  static readonly layer = Layer.unwrap(Effect.gen(function*() {
    const config = yield* AppConfig
    // Give up connecting well before the request timeout, so a connect hang
    // is reported as "nothing sent" (retryable) rather than as a timeout
    // after which we could not know whether createTask arrived.
    const connectTimeout = Math.max(100, Math.min(10_000, Math.floor(Duration.toMillis(config.kieRequestTimeout) / 2)))
    return Kie.layerNoHttp.pipe(
      Layer.provide(ConnectTimeoutAgents.httpClientLayer(connectTimeout))
    )
  }))
}

export type { KieCreateTaskError, KieError, KieGetTaskError }
