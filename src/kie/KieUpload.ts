/**
 * Kie's file upload API (KIE_UPLOAD_BASE_URL, `POST /api/file-stream-upload`,
 * multipart `file`, `uploadPath`, `fileName`, the same Bearer key): where a
 * user's photo goes so an editing model can fetch it. The answer is
 * `{code,msg,data:{downloadUrl}}`, decoded with Schema; the URL is what
 * createTask names in the model's image field.
 *
 * Gotchas: uploads are free and Kie deletes them after a few days, so
 * uploading again after a failover costs nothing; the engine stores the URL
 * as a step of the generation all the same, so createTask always names the
 * same file. Only bytes are sent: never a Telegram file URL (it carries the
 * bot token), which is why `file-url-upload` is not used.
 */
import { Effect, Result, Schema } from "effect"
import { HttpClientRequest } from "effect/http"
import { randomBytes } from "node:crypto"
import type { AppConfigShape } from "../platform/AppConfig.ts"
import { counted, type KieHttp, parseJson } from "./KieHttp.ts"
import { clip, decodeEnvelope } from "./KieSchema.ts"

/** The stream upload endpoint, below KIE_UPLOAD_BASE_URL. */
export const UPLOAD_PATH = "/api/file-stream-upload"
/** The folder our uploads go to on Kie's file host. */
export const UPLOAD_FOLDER = "zimage-bot/edits"

/** A picture could not be uploaded to Kie; `retryable` when nothing proves it would fail again. */
export class KieUploadFailed extends Schema.TaggedError<KieUploadFailed>()("KieUploadFailed", {
  retryable: Schema.Boolean,
  message: Schema.String
}) {}

const UploadData = Schema.Struct({
  downloadUrl: Schema.String.check(Schema.isPattern(/^https?:\/\/[^\s]+$/i), Schema.isMaxLength(4096))
})

/** The picture's URL from an upload answer, or why there is none. */
export const decodeUploadBody = (status: number, text: string): Result.Result<string, KieUploadFailed> => {
  const envelope = decodeEnvelope("createTask", status, parseJson(text), text)
  if (Result.isFailure(envelope)) {
    const error = envelope.failure
    return Result.fail(
      new KieUploadFailed({
        retryable: error.retryable,
        message: `Kie upload refused: ${error.message.replace("createTask", "upload")}`
      })
    )
  }
  const data = Schema.decodeUnknownResult(UploadData)(envelope.success.data)
  return Result.isFailure(data)
    ? Result.fail(
      new KieUploadFailed({ retryable: false, message: `Kie upload: no downloadUrl: ${clip(data.failure.message)}` })
    )
    : Result.succeed(data.success.downloadUrl)
}

/**
 * The upload's multipart body (`file`, `uploadPath`, `fileName`), built by
 * hand: the global `FormData` and `Blob` are Node's bundled undici, whose
 * first use loads all of it (about 15 MiB of RSS, kept for good). The file
 * name is ours; quotes and line breaks are replaced all the same, as they
 * would break the part headers.
 */
export const multipartOf = (bytes: Uint8Array, fileName: string) => {
  const boundary = `zimage-bot-${randomBytes(16).toString("hex")}`
  const name = fileName.replace(/["\\\r\n]/g, "_")
  const part = (headers: string) => `--${boundary}\r\n${headers}\r\n\r\n`
  const head = part(
    `Content-Disposition: form-data; name="file"; filename="${name}"\r\nContent-Type: application/octet-stream`
  )
  const fields = `\r\n${part(`Content-Disposition: form-data; name="uploadPath"`)}${UPLOAD_FOLDER}` +
    `\r\n${part(`Content-Disposition: form-data; name="fileName"`)}${name}\r\n--${boundary}--\r\n`
  return {
    body: Buffer.concat([Buffer.from(head), bytes, Buffer.from(fields)]),
    contentType: `multipart/form-data; boundary=${boundary}`
  }
}

/** Uploads one picture's bytes; returns the URL Kie serves it at. */
export type UploadFile = (bytes: Uint8Array, fileName: string) => Effect.Effect<string, KieUploadFailed>

/** The upload call over `http` (the key, User-Agent and timeout of every Kie request). */
export const makeUploadFile = (http: KieHttp, config: Pick<AppConfigShape, "kieUploadBaseUrl">): UploadFile =>
  Effect.fn("Kie.uploadFile")((bytes: Uint8Array, fileName: string) =>
    counted("upload", uploadOnce(http, config, bytes, fileName))
  )

const uploadOnce = (
  http: KieHttp,
  config: Pick<AppConfigShape, "kieUploadBaseUrl">,
  bytes: Uint8Array,
  fileName: string
): Effect.Effect<string, KieUploadFailed> =>
  Effect.gen(function*() {
    const form = multipartOf(bytes, fileName)
    const request = HttpClientRequest.post(`${config.kieUploadBaseUrl}${UPLOAD_PATH}`).pipe(
      HttpClientRequest.bodyUint8Array(form.body, form.contentType)
    )
    const result = yield* http.exchange(request)
    if (result._tag !== "Answered") {
      const detail = result._tag === "TimedOut" ? `no answer within ${http.timeoutMillis} ms` : result.detail
      return yield* new KieUploadFailed({ retryable: true, message: http.scrub(`Kie upload failed: ${detail}`) })
    }
    const decoded = decodeUploadBody(result.status, result.text)
    if (Result.isSuccess(decoded)) return decoded.success
    return yield* new KieUploadFailed({ ...decoded.failure, message: http.scrub(decoded.failure.message) })
  })
