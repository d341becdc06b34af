/**
 * Files users send: `getFile(file_id)` for the file's path, then the bytes
 * from `{apiRoot}/file/bot<token>/<file_path>`, read with a hard size limit.
 *
 * Gotchas: that URL contains the bot token. It is built here, used for one
 * request and never returned, logged, put in an error or handed to another
 * service (Kie gets the bytes, re-uploaded). Errors name the file id only.
 * Bots may download at most 20 MB; getFile refuses larger files ("file is
 * too big"), which is `TelegramFileUnavailable` with `tooBig`.
 */
import { Duration, Effect, Redacted, Schema } from "effect"
import * as http from "node:http"
import * as https from "node:https"
import { BoundedBody } from "../media/BoundedBody.ts"
import type { Call } from "./BotApiCall.ts"
import type { TelegramError } from "./TelegramErrors.ts"

/** Telegram's limit on files a bot may download. */
export const BOT_DOWNLOAD_LIMIT = 20 * 1024 * 1024
/** One download's bound. */
export const FILE_DOWNLOAD_TIMEOUT = Duration.seconds(60)

/** A user's file could not be fetched; `tooBig`: over the 20 MB bots may download. */
export class TelegramFileUnavailable extends Schema.TaggedError<TelegramFileUnavailable>()(
  "TelegramFileUnavailable",
  { fileId: Schema.String, tooBig: Schema.Boolean, message: Schema.String }
) {}

const FileResult = Schema.StructWithRest(
  Schema.Struct({
    file_id: Schema.String,
    file_size: Schema.optionalKey(Schema.Int),
    file_path: Schema.optionalKey(Schema.String)
  }),
  [Schema.Record(Schema.String, Schema.Unknown)]
)

const unavailable = (fileId: string, message: string, tooBig = false) =>
  new TelegramFileUnavailable({ fileId, tooBig, message: `Telegram file ${fileId}: ${message}` })

/**
 * GETs `url` and reads its body whole, failing past `BOT_DOWNLOAD_LIMIT`.
 * Over `node:http(s)` rather than the global `fetch`, whose first use loads
 * Node's bundled undici (about 15 MiB of RSS for one kind of request).
 * Interruption (the caller's timeout) destroys the request.
 */
const getBounded = (fileId: string, url: string) =>
  Effect.callback<Uint8Array, TelegramFileUnavailable>((resume, signal) => {
    const failWith = (message: string, tooBig = false) => resume(Effect.fail(unavailable(fileId, message, tooBig)))
    const client = url.startsWith("https:") ? https : http
    const request = client.get(url, { signal }, (response) => {
      const status = response.statusCode ?? 0
      if (status < 200 || status > 299) {
        response.resume()
        return failWith(`the download answered HTTP ${status}`)
      }
      const declared = Number(response.headers["content-length"] ?? "")
      if (declared > BOT_DOWNLOAD_LIMIT) {
        request.destroy()
        return failWith("over 20 MB", true)
      }
      const body = new BoundedBody(BOT_DOWNLOAD_LIMIT, Number.isFinite(declared) ? declared : undefined)
      response.on("data", (chunk: Buffer) => {
        if (body.append(chunk)) return
        request.destroy()
        failWith("over 20 MB", true)
      })
      response.on("end", () => resume(Effect.succeed(body.bytes())))
      response.on("error", () => failWith("the download broke off"))
    })
    // No message of Node's: it could hold the URL, and the URL holds the token.
    request.on("error", () => failWith("the download failed (no answer)"))
  })

/** `downloadFile` over `call` (getFile) and a plain GET of the file URL (`getBounded`). */
export const makeDownloadFile = (
  call: Call,
  apiRoot: string,
  token: Redacted.Redacted<string>,
  timeout: Duration.Duration
) =>
  Effect.fn("Telegram.downloadFile")(function*(fileId: string) {
    const file = yield* call("getFile", { file_id: fileId }, { result: FileResult, timeout }).pipe(
      Effect.catchTag(
        "TelegramBadRequest",
        (error) =>
          Effect.fail(unavailable(fileId, `getFile refused: ${error.description}`, /too big/i.test(error.description)))
      )
    )
    if (file.file_path === undefined) return yield* unavailable(fileId, "getFile gave no file_path")
    if ((file.file_size ?? 0) > BOT_DOWNLOAD_LIMIT) return yield* unavailable(fileId, "over 20 MB", true)
    // Built here and used once: the URL carries the token.
    const url = `${apiRoot}/file/bot${Redacted.value(token)}/${file.file_path}`
    return yield* getBounded(fileId, url).pipe(
      Effect.timeoutOrElse({
        duration: FILE_DOWNLOAD_TIMEOUT,
        orElse: () => Effect.fail(unavailable(fileId, "the download timed out"))
      })
    )
  }) as (fileId: string) => Effect.Effect<Uint8Array, TelegramError | TelegramFileUnavailable>
