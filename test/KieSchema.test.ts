/**
 * The decoders of Kie's answers, as pure functions: random bodies either
 * decode or fail with a typed Kie error (KieBadPayload for a 200 whose data
 * is unreadable), and never throw.
 */
import { assert, describe, it } from "@effect/vitest"
import { Result, Schema } from "effect"
import { checkSignature, expectedSignature } from "../src/kie/KieSignature.ts"
import {
  decodeCallbackBody,
  decodeCreateTaskBody,
  decodeRecordInfoBody,
  isKieError,
  safeFailMessage,
  TaskStateLiteral
} from "../src/kie/Kie.ts"

/** Any JSON value. */
const AnyJson = Schema.Json

/** Bodies shaped like recordInfo answers, with every field free to be wrong. */
const Loose = Schema.Union([Schema.String, Schema.Finite, Schema.Null, Schema.Boolean, Schema.Array(Schema.String)])
const RecordInfoLike = Schema.Struct({
  code: Schema.Union([Schema.Literal(200), Schema.Literal(422), Schema.Int, Schema.String]),
  msg: Schema.optional(Schema.Union([Schema.String, Schema.Literal("recordInfo is null"), Schema.Null])),
  data: Schema.Union([
    Schema.Null,
    Schema.Struct({
      taskId: Schema.Union([Schema.Literal("task_1"), Schema.String, Schema.Finite]),
      state: Schema.Union([TaskStateLiteral, Schema.String]),
      resultJson: Schema.optional(Schema.Union([
        Schema.Literal("{\"resultUrls\":[\"https://cdn.example/a.png\"]}"),
        Schema.Literal("{\"resultUrls\":[]}"),
        Schema.Literal("{\"resultUrls\":[\"javascript:alert(1)\"]}"),
        Schema.Literal("{not json"),
        Loose
      ])),
      param: Schema.optional(Loose),
      failCode: Schema.optional(Loose),
      failMsg: Schema.optional(Loose),
      createTime: Schema.optional(Loose),
      completeTime: Schema.optional(Loose),
      response: Schema.optional(AnyJson)
    }),
    AnyJson
  ])
})

/** Code-200 bodies about the polled task: the cases where only the data can be wrong. */
const SuccessLike = Schema.Struct({
  code: Schema.Literal(200),
  msg: Schema.optional(Schema.String),
  data: Schema.Struct({
    taskId: Schema.Literal("task_1"),
    state: TaskStateLiteral,
    resultJson: Schema.optional(Schema.Union([
      Schema.Literal("{\"resultUrls\":[\"https://cdn.example/a.png\"]}"),
      Schema.Literal("{\"resultUrls\":[]}"),
      Schema.Literal("{\"resultUrls\":[\"javascript:alert(1)\"]}"),
      Schema.Literal("{\"resultUrls\":\"https://cdn.example/a.png\"}"),
      Schema.Literal("{not json"),
      Schema.Literal(""),
      Schema.Null
    ])),
    param: Schema.optional(Schema.Union([Schema.Literal("{\"model\":\"z-image\",\"input\":\"{oops\"}"), Loose])),
    failCode: Schema.optional(Loose),
    failMsg: Schema.optional(Loose),
    response: Schema.optional(AnyJson)
  })
})

const runs = { arbitrary: { runs: 500 } }

const HttpStatus = Schema.Union([
  Schema.Literal(200),
  Schema.Int.check(Schema.isBetween({ minimum: 100, maximum: 599 }))
])

const neverThrows = <A>(f: () => A): A => {
  try {
    return f()
  } catch (error) {
    assert.fail(`threw: ${String(error)}`)
  }
}

describe("Kie decoders", () => {
  it.prop(
    "recordInfo: any JSON body either decodes or is a typed Kie error",
    [AnyJson, HttpStatus],
    ([body, status]) => {
      const result = neverThrows(() => decodeRecordInfoBody("task_1", status, body, JSON.stringify(body) ?? ""))
      if (Result.isFailure(result)) assert.isTrue(isKieError(result.failure), String(result.failure))
    },
    runs
  )

  it.prop(
    "recordInfo: a code-200 body whose data is not a readable task fails with KieBadPayload, nothing else",
    [Schema.Union([RecordInfoLike, SuccessLike])],
    ([body]) => {
      const result = neverThrows(() => decodeRecordInfoBody("task_1", 200, body, JSON.stringify(body)))
      if (Result.isSuccess(result)) {
        const state = result.success
        assert.strictEqual(state.taskId, "task_1")
        if (state._tag === "Success") {
          for (const url of state.resultUrls) assert.match(url, /^https?:\/\//)
        }
        return
      }
      const error = result.failure
      assert.isTrue(isKieError(error))
      if (body.code === 200 && body.data !== null && typeof body.data === "object") {
        assert.strictEqual(error._tag, "KieBadPayload", `${JSON.stringify(body)} -> ${error._tag}`)
        assert.isTrue(error.retryable)
      }
    },
    runs
  )

  it.prop(
    "createTask: any body either yields a task id or is a typed Kie error",
    [AnyJson, HttpStatus],
    ([body, status]) => {
      const result = neverThrows(() => decodeCreateTaskBody(status, body, JSON.stringify(body) ?? ""))
      if (Result.isSuccess(result)) assert.isAbove(result.success.length, 0)
      else assert.isTrue(isKieError(result.failure))
    }
  )

  it.prop("callback: any body either decodes or is KieBadPayload", [
    Schema.Union([AnyJson, RecordInfoLike, SuccessLike])
  ], ([body]) => {
    const result = neverThrows(() => decodeCallbackBody(body))
    if (Result.isFailure(result)) assert.strictEqual(result.failure._tag, "KieBadPayload")
    else if (result.success.state._tag === "Success") {
      for (const url of result.success.state.resultUrls) assert.match(url, /^https?:\/\//)
    }
  }, runs)

  it("decodes the reference's examples", () => {
    const success = decodeRecordInfoBody("task_12345678", 200, {
      code: 200,
      msg: "success",
      data: {
        taskId: "task_12345678",
        model: "z-image",
        state: "success",
        param: "{\"model\":\"z-image\",\"callBackUrl\":\"https://x/cb\",\"input\":\"{\\\"prompt\\\":\\\"fox\\\"}\"}",
        resultJson: "{\"resultUrls\":[\"https://example.com/generated-content.jpg\"]}",
        failCode: "",
        failMsg: "",
        costTime: 15000,
        completeTime: 1698765432000,
        createTime: 1698765400000,
        updateTime: 1698765432000
      }
    }, "")
    assert.deepStrictEqual(Result.getOrThrow(success), {
      _tag: "Success",
      taskId: "task_12345678",
      resultUrls: ["https://example.com/generated-content.jpg"],
      param: { model: "z-image", callBackUrl: "https://x/cb", input: { prompt: "fox" } },
      createTime: 1698765400000,
      completeTime: 1698765432000
    })
    const missing = decodeRecordInfoBody("t", 200, { code: 422, msg: "recordInfo is null", data: null }, "")
    assert.deepStrictEqual(Result.getOrThrow(missing), { _tag: "Waiting", taskId: "t", recordMissing: true })
    const other = decodeRecordInfoBody(
      "t",
      200,
      { code: 200, msg: "success", data: { taskId: "u", state: "waiting" } },
      ""
    )
    assert.strictEqual(Result.isFailure(other) && other.failure._tag, "KieBadPayload")
    const created = decodeCreateTaskBody(200, {
      code: 200,
      msg: "success",
      data: { taskId: "task_z-image_1765174270120" }
    }, "")
    assert.strictEqual(Result.getOrThrow(created), "task_z-image_1765174270120")
  })

  it("failMsg is shown to users only when it is short plain text", () => {
    assert.strictEqual(safeFailMessage("  Content flagged\nas sensitive "), "Content flagged as sensitive")
    assert.isUndefined(safeFailMessage("see https://kie.ai/logs"))
    assert.isUndefined(safeFailMessage("java.lang.NullPointerException at com.kie.Gen(Gen.java:42)"))
    assert.isUndefined(safeFailMessage("<b>boom</b>"))
    assert.isUndefined(safeFailMessage("x".repeat(201)))
  })
})

describe("callback signature", () => {
  const key = "kie-hmac-test-key-0123456789"
  const now = 1_800_000_000_000
  const ts = String(now / 1000)
  const good = expectedSignature(key, "task_1", ts)

  it("matches Kie's scheme: base64(HMAC-SHA256(taskId + '.' + timestamp))", () => {
    // Computed independently: printf 'task_1.1800000000' | openssl dgst -sha256 -hmac <key> -binary | base64
    assert.strictEqual(good, "nEJ2k7cSvD2sk8u/tw5L1cWNIy0zJqBrtJpnrsU3zYk=")
    assert.strictEqual(checkSignature({ key, taskId: "task_1", signature: good, timestamp: ts, nowMillis: now }), "ok")
  })

  it("rejects a wrong, missing, stale or malformed one", () => {
    const check = (signature: string | undefined, timestamp: string | undefined, nowMillis = now, taskId = "task_1") =>
      checkSignature({ key, taskId, signature, timestamp, nowMillis })
    assert.strictEqual(check(good, ts, now, "task_2"), "mismatch")
    assert.strictEqual(check(good.slice(1), ts), "mismatch")
    assert.strictEqual(check(undefined, ts), "missing")
    assert.strictEqual(check(good, undefined), "missing")
    assert.strictEqual(check(good, "1.8e9"), "malformed-timestamp")
    assert.strictEqual(check(good, ts, now + 5 * 60_000), "ok")
    assert.strictEqual(check(good, ts, now + 5 * 60_000 + 1_000), "stale")
    assert.strictEqual(check(good, ts, now - 5 * 60_000 - 1_000), "stale")
  })
})
