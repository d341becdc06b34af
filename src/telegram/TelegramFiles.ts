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

/** Reads a response body up to the limit; fails past it. */
const readBounded = (fileId: string, response: Response) =>
  Effect.tryPromise({
    try: async () => {
      const declared = Number(response.headers.get("content-length") ?? "")
      if (declared > BOT_DOWNLOAD_LIMIT) throw new Error("too big")
      const body = new BoundedBody(BOT_DOWNLOAD_LIMIT, Number.isFinite(declared) ? declared : undefined)
      for await (const chunk of response.body ?? []) {
        if (!body.append(chunk as Uint8Array)) throw new Error("too big")
      }
      return body.bytes()
    },
    catch: (error) =>
      (error as Error).message === "too big"
        ? unavailable(fileId, "over 20 MB", true)
        : unavailable(fileId, "the download broke off")
  })

/** `downloadFile` over `call` (getFile) and a plain fetch of the file URL. */
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
    const response = yield* Effect.tryPromise({
      try: (signal) =>
        fetch(url, {
          signal: AbortSignal.any([signal, AbortSignal.timeout(Duration.toMillis(FILE_DOWNLOAD_TIMEOUT))])
        }),
      catch: () => unavailable(fileId, "the download failed (no answer)")
    })
    if (!response.ok) return yield* unavailable(fileId, `the download answered HTTP ${response.status}`)
    return yield* readBounded(fileId, response)
  }) as (fileId: string) => Effect.Effect<Uint8Array, TelegramError | TelegramFileUnavailable>
