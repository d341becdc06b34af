/**
 * An edit's pictures, made fetchable for Kie before createTask: each
 * Telegram file (the largest size the user sent) is downloaded with getFile
 * and uploaded to Kie's file API; the URLs are stored on the row
 * (`input_urls`) before createTask is sent.
 *
 * Durable: the upload is a stored step. A row that already has its URLs
 * (a failover after the upload, "🔁 Ещё вариант" of an edit, a reply to a
 * delivered picture) goes straight to createTask; one without is uploaded
 * again from Telegram, which costs nothing (uploads are free; only
 * createTask bills). Two leaders racing store only the first URLs.
 *
 * The Telegram file URL carries the bot token: only `Telegram.downloadFile`
 * sees it; Kie gets the bytes.
 */
import { DateTime, Duration, Effect, Option, Schema } from "effect"
import type { Generation, GenerationsShape } from "../generations/Generations.ts"
import type { KieShape } from "../kie/Kie.ts"
import { imageInfo } from "../media/ImageInfo.ts"
import type { TelegramShape } from "../telegram/Telegram.ts"
import { t } from "../texts/Messages.ts"
import { logState } from "./Bookkeeping.ts"

/**
 * How long after an album's first photo its edit waits for the others
 * (Telegram sends them as separate updates, within a second or so).
 */
export const ALBUM_SETTLE = Duration.seconds(2)

/** Why an edit's pictures could not be made fetchable; `reason` is what its user is told. */
export class EditInputsFailed extends Schema.TaggedError<EditInputsFailed>()("EditInputsFailed", {
  code: Schema.Literals(["UploadFailed", "UploadExpired", "FileTooBig"]),
  message: Schema.String,
  reason: Schema.String
}) {}

/** A file name Kie's host will serve with the right type. */
const fileNameOf = (g: Generation, index: number, bytes: Uint8Array) =>
  `generation-${g.id}-${index + 1}.${imageInfo(bytes)?.format ?? "jpg"}`

/** Making edits' pictures fetchable, on these services. */
export const makeEditInputs = (
  telegram: Pick<TelegramShape, "downloadFile">,
  kie: Pick<KieShape, "uploadFile">,
  generations: Pick<GenerationsShape, "setInputUrls" | "find">
) => {
  const failed = (g: Generation, code: EditInputsFailed["code"], message: string) => {
    const reasons = t(g.lang).editReasons
    const reason = code === "UploadFailed" ? reasons.uploadFailed : code === "FileTooBig"
      ? t(g.lang).fileTooBig
      : reasons.uploadExpired
    return new EditInputsFailed({ code, message: `model ${g.model}: ${message}`, reason })
  }

  const uploadOne = (g: Generation, fileId: string, index: number) =>
    Effect.gen(function*() {
      const bytes = yield* telegram.downloadFile(fileId).pipe(
        Effect.mapError((error) =>
          error._tag === "TelegramFileUnavailable"
            ? failed(g, error.tooBig ? "FileTooBig" : "UploadExpired", error.message)
            : failed(g, "UploadFailed", `getFile: ${error.message}`)
        )
      )
      return yield* kie.uploadFile(bytes, fileNameOf(g, index, bytes)).pipe(
        Effect.mapError((error) => failed(g, "UploadFailed", error.message))
      )
    })

  /** An album's later photos arrive as separate updates: give them `ALBUM_SETTLE` to join. */
  const settled = (g: Generation) =>
    Effect.gen(function*() {
      if (g.mediaGroupId === null || g.inputUrls !== null) return g
      const wait = DateTime.distance(yield* DateTime.now, DateTime.addDuration(g.createdAt, ALBUM_SETTLE))
      if (Duration.isGreaterThan(wait, Duration.zero)) yield* Effect.sleep(wait)
      const now = yield* generations.find(g.id).pipe(Effect.orElseSucceed(() => Option.none<Generation>()))
      return Option.getOrElse(now, () => g)
    })

  /** The URLs createTask names for `g` (none for text-to-image), uploading them first if needed. */
  const prepare = Effect.fn("Engine.editInputs")(function*(queued: Generation) {
    const g = yield* settled(queued)
    if (g.inputUrls !== null) return g.inputUrls
    if (g.inputFileIds.length === 0) return []
    const urls = yield* Effect.forEach(g.inputFileIds, (fileId, index) => uploadOne(g, fileId, index))
    const stored = yield* generations.setInputUrls(g.id, urls).pipe(Effect.orElseSucceed(() => false))
    if (stored) {
      yield* logState(g.id, `queued: ${urls.length} picture(s) uploaded for ${g.model}`)
      return urls
    }
    // Another run stored its URLs first (or the row moved on): name those.
    const again = yield* generations.find(g.id).pipe(Effect.orElseSucceed(() => Option.none<Generation>()))
    return Option.match(again, { onNone: () => urls, onSome: (row) => row.inputUrls ?? urls })
  })

  return { prepare }
}
