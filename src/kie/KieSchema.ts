/**
 * The shapes Kie.ai sends, decoded with Schema, and the pure functions that
 * turn an answer into a task state or a typed error. Pure so they can be
 * property-tested and shared by the client (`Kie.ts`) and the callback route
 * (`KieCallback.ts`).
 *
 * Every answer is `{code,msg,data}` and HTTP 200 does not mean success: the
 * body `code` decides (`docs/external-apis.md` lists the codes). `resultJson`
 * and `param` are JSON *strings* inside the JSON and are parsed a second time.
 *
 * A task's states (`data.state`) and what we make of them:
 *
 * | Kie's state  | `TaskState`  | final | means                                          |
 * | ------------ | ------------ | ----- | ---------------------------------------------- |
 * | (none yet)   | `Waiting`    | no    | `422 recordInfo is null`: not visible yet      |
 * | `waiting`    | `Waiting`    | no    | accepted, not started                          |
 * | `queuing`    | `Queuing`    | no    | in Kie's queue                                 |
 * | `generating` | `Generating` | no    | being generated                                |
 * | `success`    | `Success`    | yes   | `resultJson` holds at least one result URL     |
 * | `fail`       | `Fail`       | yes   | no image; `failCode` and `failMsg` say why     |
 */
import { Result, Schema } from "effect"
import { ASPECT_RATIOS } from "../texts/Messages.ts"
import {
  KieBadPayload,
  type KieError,
  KieFeatureDisabled,
  KieGenerationFailed,
  KieInsufficientCredits,
  KieMaintenance,
  KieNotFound,
  type KieOperation,
  KieRateLimited,
  KieServerError,
  KieUnauthorized,
  KieUnexpectedResponse,
  KieUsageLimitExceeded,
  KieValidationFailed
} from "./KieErrors.ts"

// ---------------------------------------------------------------------------
// Requests

/** One of `ASPECT_RATIOS` (`texts/Messages.ts`): the ratios Z-Image accepts as `input.aspect_ratio`. */
export const AspectRatio = Schema.Literals(ASPECT_RATIOS)
/** One of `ASPECT_RATIOS`. */
export type AspectRatio = typeof AspectRatio.Type

/** The Kie model every task is created with. */
export const MODEL = "z-image"

// ---------------------------------------------------------------------------
// Task states

/** Accepted, not started; or not visible yet (`recordMissing`). */
export interface TaskWaiting {
  readonly _tag: "Waiting"
  readonly taskId: string
  /**
   * Kie answered `422 recordInfo is null` (or empty data): the task is not
   * visible yet, which happens briefly right after createTask.
   */
  readonly recordMissing: boolean
}
/** In Kie's queue. */
export interface TaskQueuing {
  readonly _tag: "Queuing"
  readonly taskId: string
}
/** Being generated. */
export interface TaskGenerating {
  readonly _tag: "Generating"
  readonly taskId: string
}
/** When a finished task was created and completed. */
export interface TaskTimes {
  /** Unix millis, when Kie reports them. */
  readonly createTime: number | undefined
  readonly completeTime: number | undefined
}
/** Finished with at least one result URL. */
export interface TaskSucceeded extends TaskTimes {
  readonly _tag: "Success"
  readonly taskId: string
  readonly resultUrls: readonly [string, ...Array<string>]
  /** The original request as Kie echoes it, when it could be read. */
  readonly param: TaskParam | undefined
}
/** Finished without an image: Kie's failCode and failMsg say why. */
export interface TaskFailedState extends TaskTimes {
  readonly _tag: "Fail"
  readonly taskId: string
  readonly failCode: string
  readonly failMsg: string
  readonly param: TaskParam | undefined
}

/** A task's state as recordInfo or a callback reports it. */
export type TaskState = TaskWaiting | TaskQueuing | TaskGenerating | TaskSucceeded | TaskFailedState
/** A state a task does not leave. */
export type TerminalTaskState = TaskSucceeded | TaskFailedState

/** Whether the task has finished (success or fail). */
export const isTerminal = (state: TaskState): state is TerminalTaskState =>
  state._tag === "Success" || state._tag === "Fail"

/** The request as Kie echoes it in `param` (a JSON string on the wire). */
export interface TaskParam {
  readonly model: string | undefined
  readonly callBackUrl: string | undefined
  readonly input: Readonly<Record<string, unknown>> | undefined
}

// ---------------------------------------------------------------------------
// Wire schemas

const NullableString = Schema.optional(Schema.NullOr(Schema.String))
const NullableNumber = Schema.optional(Schema.NullOr(Schema.Finite))

/** `{code,msg,data}`: the envelope of every answer and callback. */
export const Envelope = Schema.Struct({
  code: Schema.Finite,
  msg: NullableString,
  data: Schema.optional(Schema.Unknown)
})

/** The `data` of a createTask answer. */
export const CreateTaskData = Schema.Struct({
  taskId: Schema.String.check(Schema.isMinLength(1), Schema.isMaxLength(200)),
  recordId: Schema.optional(Schema.Unknown)
})

/** `data.state` on the wire. */
export const TaskStateLiteral = Schema.Literals(["waiting", "queuing", "generating", "success", "fail"])

/** The `data` of recordInfo, and of a callback. Unknown extra fields are ignored. */
export const RecordInfoData = Schema.Struct({
  taskId: Schema.String.check(Schema.isMinLength(1), Schema.isMaxLength(200)),
  model: NullableString,
  state: TaskStateLiteral,
  param: NullableString,
  resultJson: NullableString,
  failCode: Schema.optional(Schema.NullOr(Schema.Union([Schema.String, Schema.Finite]))),
  failMsg: NullableString,
  costTime: NullableNumber,
  completeTime: NullableNumber,
  createTime: NullableNumber,
  updateTime: NullableNumber,
  /** `resultJson` already parsed, which some answers carry. */
  response: Schema.optional(Schema.Unknown)
})
/** The decoded `data` of recordInfo. */
export type RecordInfoData = typeof RecordInfoData.Type

/** A result URL: the bot downloads it, so only http(s). */
export const ResultUrl = Schema.String.check(Schema.isPattern(/^https?:\/\/[^\s]+$/i), Schema.isMaxLength(4096))

/** `resultJson` parsed: at least one result URL. */
export const ResultObject = Schema.Struct({ resultUrls: Schema.NonEmptyArray(ResultUrl) })
/** `resultJson` as the string it is on the wire. */
export const ResultJson = Schema.fromJsonString(ResultObject)

const ParamObject = Schema.Struct({
  model: Schema.optional(Schema.String),
  callBackUrl: Schema.optional(Schema.String),
  input: Schema.optional(Schema.Union([Schema.String, Schema.Record(Schema.String, Schema.Unknown)]))
})
const ParamJson = Schema.fromJsonString(ParamObject)
const InputJson = Schema.fromJsonString(Schema.Record(Schema.String, Schema.Unknown))

/** A callback body: recordInfo-shaped; some docs show `task_id` instead of `taskId`. */
const CallbackEnvelope = Schema.Struct({
  code: Schema.optional(Schema.NullOr(Schema.Finite)),
  msg: NullableString,
  data: Schema.Record(Schema.String, Schema.Unknown)
})

// ---------------------------------------------------------------------------
// Decoding

const MAX_DETAIL = 300

/** Shortens text from Kie for a log line or an error message. */
export const clip = (text: string, max = MAX_DETAIL): string => {
  // oxlint-disable-next-line eslint/no-control-regex -- control characters are exactly what is removed
  const flat = text.replace(/[\u0000-\u001f\u007f]+/g, " ").trim()
  return flat.length > max ? `${flat.slice(0, max)}…` : flat
}

const badPayload = (operation: KieOperation, what: string, detail: string) =>
  new KieBadPayload({ operation, message: `Kie ${operation}: ${what}: ${clip(detail)}` })

/**
 * The typed error for a non-200 body `code` (or, when the body has no code,
 * a non-2xx HTTP status).
 */
export const errorForCode = (
  operation: KieOperation,
  code: number,
  msg: string | undefined,
  httpStatus: number
): KieError => {
  const said = msg === undefined || msg === "" ? "" : `: ${clip(msg, 200)}`
  const message = (meaning: string) => `Kie ${operation} answered ${code} (${meaning})${said}`
  switch (code) {
    case 401:
      return new KieUnauthorized({ operation, message: message("unauthorized: check KIE_API_KEY") })
    case 402:
      return new KieInsufficientCredits({ operation, message: message("insufficient credits: top up the Kie account") })
    case 404:
      return new KieNotFound({ operation, message: message("not found") })
    case 422:
      return new KieValidationFailed({ operation, message: message("validation error") })
    case 429:
      return new KieRateLimited({ operation, message: message("rate limited") })
    case 433:
      return new KieUsageLimitExceeded({ operation, message: message("the API key's usage cap is reached") })
    case 455:
      return new KieMaintenance({ operation, message: message("maintenance") })
    case 501:
      return new KieGenerationFailed({ operation, message: message("generation failed") })
    case 505:
      return new KieFeatureDisabled({ operation, message: message("feature disabled") })
  }
  if (code >= 500 && code <= 599) return new KieServerError({ operation, code, message: message("server error") })
  return new KieUnexpectedResponse({
    operation,
    httpStatus,
    code,
    message: message(`undocumented code, HTTP ${httpStatus}`)
  })
}

/**
 * Reads an answer: returns the envelope when the body code is 200, else the
 * error it stands for. `body` is the parsed JSON, or `undefined` when the
 * body was not JSON (then `text` is used for the message).
 */
export const decodeEnvelope = (
  operation: KieOperation,
  httpStatus: number,
  body: unknown,
  text: string
): Result.Result<typeof Envelope.Type, KieError> => {
  const envelope = Schema.decodeUnknownResult(Envelope)(body)
  if (Result.isFailure(envelope)) {
    if (httpStatus < 200 || httpStatus > 299) {
      // No usable body (a proxy's HTML page, an empty body): the status is all we have.
      return Result.fail(errorForCode(operation, httpStatus, text === "" ? undefined : text, httpStatus))
    }
    return Result.fail(
      badPayload(operation, "the answer is not {code,msg,data}", body === undefined ? text : envelope.failure.message)
    )
  }
  const { code } = envelope.success
  if (code !== 200) return Result.fail(errorForCode(operation, code, envelope.success.msg ?? undefined, httpStatus))
  if (httpStatus < 200 || httpStatus > 299) {
    return Result.fail(errorForCode(operation, httpStatus, envelope.success.msg ?? undefined, httpStatus))
  }
  return Result.succeed(envelope.success)
}

/** The task id from a createTask answer. */
export const decodeCreateTaskBody = (
  httpStatus: number,
  body: unknown,
  text: string
): Result.Result<string, KieError> =>
  Result.flatMap(decodeEnvelope("createTask", httpStatus, body, text), (envelope) => {
    const data = Schema.decodeUnknownResult(CreateTaskData)(envelope.data)
    return Result.isFailure(data)
      ? Result.fail(badPayload("createTask", "no taskId in a success answer", data.failure.message))
      : Result.succeed(data.success.taskId)
  })

const isRecordNull = (code: number, msg: string | null | undefined) =>
  code === 422 && typeof msg === "string" && /record\s*info\s+is\s+null/i.test(msg)

const parseParam = (param: string | null | undefined): TaskParam | undefined => {
  // The echoed request is informational: a result must not be lost because
  // it is unreadable, so a bad `param` is dropped, not an error.
  if (param === undefined || param === null || param === "") return undefined
  const decoded = Schema.decodeUnknownResult(ParamJson)(param)
  if (Result.isFailure(decoded)) return undefined
  const { model, callBackUrl, input } = decoded.success
  const parsedInput = typeof input === "string"
    ? Result.getOrUndefined(Schema.decodeUnknownResult(InputJson)(input))
    : input
  return { model, callBackUrl, input: parsedInput }
}

const optionalNumber = (n: number | null | undefined) => (n === null ? undefined : n)

/**
 * A task state from a recordInfo `data` object (also a callback's `data`).
 * `expectedTaskId` guards against an answer about another task.
 */
export const decodeRecordData = (
  operation: KieOperation,
  expectedTaskId: string | undefined,
  data: unknown
): Result.Result<TaskState, KieBadPayload> => {
  const decoded = Schema.decodeUnknownResult(RecordInfoData)(data)
  if (Result.isFailure(decoded))
    return Result.fail(badPayload(operation, "unreadable task record", decoded.failure.message))
  const record = decoded.success
  if (expectedTaskId !== undefined && record.taskId !== expectedTaskId) {
    return Result.fail(
      badPayload(operation, "the record is about another task", `${record.taskId} != ${expectedTaskId}`)
    )
  }
  const taskId = record.taskId
  const times: TaskTimes = {
    createTime: optionalNumber(record.createTime),
    completeTime: optionalNumber(record.completeTime)
  }
  switch (record.state) {
    case "waiting":
      return Result.succeed({ _tag: "Waiting", taskId, recordMissing: false })
    case "queuing":
      return Result.succeed({ _tag: "Queuing", taskId })
    case "generating":
      return Result.succeed({ _tag: "Generating", taskId })
    case "fail":
      return Result.succeed({
        _tag: "Fail",
        taskId,
        failCode: record.failCode === undefined || record.failCode === null ? "" : String(record.failCode),
        failMsg: record.failMsg ?? "",
        param: parseParam(record.param),
        ...times
      })
    case "success": {
      const fromJson = record.resultJson !== undefined && record.resultJson !== null && record.resultJson !== ""
        ? Schema.decodeUnknownResult(ResultJson)(record.resultJson)
        : undefined
      const result = fromJson ?? Schema.decodeUnknownResult(ResultObject)(record.response)
      if (Result.isFailure(result)) {
        return Result.fail(badPayload(operation, "success without readable result URLs", result.failure.message))
      }
      return Result.succeed({
        _tag: "Success",
        taskId,
        resultUrls: result.success.resultUrls,
        param: parseParam(record.param),
        ...times
      })
    }
  }
}

/** A recordInfo answer: a task state, or the error its code stands for. */
export const decodeRecordInfoBody = (
  taskId: string,
  httpStatus: number,
  body: unknown,
  text: string
): Result.Result<TaskState, KieError> => {
  const envelope = Schema.decodeUnknownResult(Envelope)(body)
  if (Result.isSuccess(envelope)) {
    const { code, msg, data } = envelope.success
    // Right after createTask Kie may not know the task yet: `422 recordInfo
    // is null`, or a 200 with empty data. Both mean "not visible yet".
    if (isRecordNull(code, msg) || (code === 200 && (data === null || data === undefined))) {
      return Result.succeed({ _tag: "Waiting", taskId, recordMissing: true })
    }
  }
  return Result.flatMap(
    decodeEnvelope("recordInfo", httpStatus, body, text),
    (envelope) => decodeRecordData("recordInfo", taskId, envelope.data)
  )
}

/** A callback body, decoded. */
export interface DecodedCallback {
  readonly taskId: string
  readonly state: TaskState
  /** The `data` object as received, with `taskId` set; what the store keeps. */
  readonly data: Readonly<Record<string, unknown>>
}

/** A callback body: `{code,msg,data}` with a recordInfo-shaped `data`. */
export const decodeCallbackBody = (body: unknown): Result.Result<DecodedCallback, KieBadPayload> => {
  const envelope = Schema.decodeUnknownResult(CallbackEnvelope)(body)
  if (Result.isFailure(envelope)) {
    return Result.fail(badPayload("recordInfo", "callback is not {code,msg,data}", envelope.failure.message))
  }
  const raw = envelope.success.data
  // Kie's zh sample reads `data.task_id`; Market jobs use `data.taskId`.
  const data = typeof raw.taskId !== "string" && typeof raw.task_id === "string" ? { ...raw, taskId: raw.task_id } : raw
  return Result.map(decodeRecordData("recordInfo", undefined, data), (state) => ({
    taskId: state.taskId,
    state,
    data
  }))
}
