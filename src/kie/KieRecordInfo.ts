/**
 * One recordInfo call: `GET /api/v1/jobs/recordInfo?taskId=…`, decoded into
 * the task's state. `recordInfo is null` (Kie has not stored the task yet)
 * counts as still waiting. Never retried here: the caller polls on its own
 * schedule, and an error's `retryable` tells it whether the next round may
 * succeed.
 */
import { Effect, Result } from "effect"
import { HttpClientRequest } from "effect/http"
import { KieConnectionFailed, type KieGetTaskError, KieRequestTimeout, KieTransportError } from "./KieErrors.ts"
import { counted, type KieHttp, parseJson } from "./KieHttp.ts"
import { decodeRecordInfoBody, type TaskState } from "./KieSchema.ts"

/** Kie's recordInfo endpoint, below KIE_BASE_URL. */
export const RECORD_INFO_PATH = "/api/v1/jobs/recordInfo"

/** Exactly one recordInfo request for a task. */
export const makeRecordInfo = (http: KieHttp): (taskId: string) => Effect.Effect<TaskState, KieGetTaskError> =>
  Effect.fn("Kie.recordInfo")(function*(taskId: string) {
    const operation = "recordInfo"
    const result = yield* http.exchange(
      HttpClientRequest.get(http.url(RECORD_INFO_PATH)).pipe(HttpClientRequest.setUrlParam("taskId", taskId))
    )
    switch (result._tag) {
      case "TimedOut":
        return yield* new KieRequestTimeout({
          operation,
          timeoutMillis: http.timeoutMillis,
          message: `Kie recordInfo: no answer within ${http.timeoutMillis} ms`
        })
      case "Lost":
        return yield* new KieTransportError({ operation, message: http.scrub(`Kie recordInfo: ${result.detail}`) })
      case "NotSent":
        return yield* new KieConnectionFailed({
          operation,
          message: http.scrub(`Kie recordInfo: no connection (${result.detail})`)
        })
    }
    const decoded = decodeRecordInfoBody(taskId, result.status, parseJson(result.text), result.text)
    if (Result.isSuccess(decoded)) return decoded.success
    return yield* Effect.fail(decoded.failure as KieGetTaskError)
  }, (attempt) => counted("recordInfo", Effect.mapError(attempt, http.scrubError)))
