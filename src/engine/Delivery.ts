/**
 * Delivering a `succeeded` generation's picture, once as far as possible.
 *
 * When to use: `start` when a generation succeeds, and from the sweep for
 * every `succeeded` row (a running delivery is not started twice).
 *
 * Details: the result is downloaded (bounded, `ResultDownload`, each URL
 * retried by `downloadPolicy`), sent as a photo with "✅ Готово!" and the
 * "🔁 Ещё вариант" / "🖼 Новая картинка" keyboard (as a document with the same
 * caption when Telegram would not take it as a photo), its message id
 * recorded at once, then the uncompressed original (SEND_ORIGINAL_DOCUMENT),
 * then `delivered`, then the status message is deleted. At most
 * DELIVERY_CONCURRENCY downloads and uploads run at once.
 *
 * | the row has                          | delivery does                                 |
 * | ------------------------------------ | --------------------------------------------- |
 * | no result message                    | download, send, record, original, delivered   |
 * | a result message, no original        | the original only (if configured), delivered  |
 * | both                                 | delivered                                     |
 *
 * Gotchas: between Telegram accepting a send and the database recording its
 * message id (one UPDATE, retried for about two minutes, and remembered in
 * memory for the rest of the term) a crash or a lost leadership makes the
 * next leader send the picture again. A send whose answer is lost (a timeout
 * after the upload reached Telegram) is retried too: a paid picture that
 * never arrives is worse than one that arrives twice.
 */
import { DateTime, Effect, Metric, Option, Result, Schedule, Semaphore } from "effect"
import { InputFile } from "grammy"
import { doneKeyboard, t } from "../chat/Messages.ts"
import { type Generation, Generations } from "../generations/Generations.ts"
import { fitsAsPhoto, imageInfo } from "../media/ImageInfo.ts"
import { DownloadFailed, hostOf, ResultDownload } from "../media/ResultDownload.ts"
import { AppConfig } from "../platform/AppConfig.ts"
import { generationSecondsHistogram } from "../platform/Metrics.ts"
import { backoff } from "../platform/Retry.ts"
import { Telegram, type TelegramError } from "../telegram/Telegram.ts"
import { bookkeeping, finished, logState, secondsBetween } from "./Bookkeeping.ts"
import type { EngineTerm } from "./EngineTerm.ts"
import type { FailureNotices } from "./FailureNotices.ts"
import { type StatusMessages, TRANSIENT_TELEGRAM } from "./StatusMessages.ts"

/** Downloads and uploads at once. */
export const DELIVERY_CONCURRENCY = 4
/** Downloading the result: 3 more tries, 2 s, 4 s, 8 s apart (jittered). */
export const downloadPolicy = backoff("2 seconds", "8 seconds").pipe(Schedule.upTo({ times: 3 }))
/** Sending the result after a transient Telegram error: up to 6 more tries, 2 s doubling to 30 s. */
export const sendPolicy = backoff("2 seconds", "30 seconds").pipe(Schedule.upTo({ times: 6 }))

/** The deliveries of one term. */
export interface Delivery {
  /** Starts delivering `id` as a job (nothing if one runs already). */
  readonly start: (id: string) => Effect.Effect<void>
  /** Whether `id` is being delivered now. */
  readonly running: (id: string) => boolean
  /** Delivers `id` if it is `succeeded`; never fails (the sweep retries). */
  readonly deliver: (id: string) => Effect.Effect<void>
}

type SendOutcome = "sent" | "gone" | "later"

const filenameOf = (g: Generation, bytes: Uint8Array) => {
  const info = imageInfo(bytes)
  return `zimage-${g.id}.${info?.format === "jpeg" ? "jpg" : info?.format ?? "png"}`
}

/** The deliveries of a term. */
export const make = (
  term: EngineTerm,
  notices: Pick<FailureNotices, "fail">,
  status: Pick<StatusMessages, "finalize">
): Effect.Effect<Delivery, never, AppConfig | Generations | ResultDownload | Telegram> =>
  Effect.gen(function*() {
    const config = yield* AppConfig
    const generations = yield* Generations
    const downloads = yield* ResultDownload
    const telegram = yield* Telegram
    const permits = yield* Semaphore.make(DELIVERY_CONCURRENCY)
    /** Result messages Telegram accepted this term, in case recording them failed. */
    const sentResults = new Map<string, number>()

    const download = (g: Generation) =>
      Effect.gen(function*() {
        let last: DownloadFailed | undefined
        for (const url of g.resultUrls) {
          const result = yield* Effect.result(downloads.download(url).pipe(
            Effect.tapError((error) => Effect.logWarning(`[GEN] generation ${g.id}: ${error.message}; retrying`)),
            Effect.retry(downloadPolicy)
          ))
          if (Result.isSuccess(result)) return Option.some(result.success)
          last = result.failure
        }
        yield* notices.fail(
          g,
          "download_failed",
          last?.message ?? `no result URL (${g.resultUrls.map(hostOf).join(", ")})`,
          t(g.lang).deliveryFailed
        )
        return Option.none<Uint8Array>()
      })

    /** A Telegram send, retried on transient errors (see the duplicate window in the module doc). */
    const sending = <A>(what: string, g: Generation, send: Effect.Effect<A, TelegramError>) =>
      send.pipe(
        Effect.tapError((error) =>
          TRANSIENT_TELEGRAM.has(error._tag)
            ? Effect.logWarning(`[GEN] generation ${g.id}: ${what} failed, retrying: ${error.message}`)
            : Effect.void
        ),
        Effect.retry({ schedule: sendPolicy, while: (error) => TRANSIENT_TELEGRAM.has(error._tag) }),
        Effect.result
      )

    /** What a failed send means for the delivery. */
    const sendFailed = (g: Generation, what: string, error: TelegramError) =>
      Effect.gen(function*() {
        if (error._tag === "TelegramChatBlocked") {
          yield* notices.fail(g, "chat_blocked", `${what}: ${error.description}`, undefined)
          return "gone" as const
        }
        const log = error._tag === "TelegramUnauthorized" ? Effect.logError : Effect.logWarning
        yield* log(`[GEN] generation ${g.id}: ${what} failed, trying again later: ${error.message}`)
        return "later" as const
      })

    const recordResultMessage = (g: Generation, messageId: number, alsoOriginal: boolean) =>
      Effect.gen(function*() {
        sentResults.set(g.id, messageId)
        yield* bookkeeping(`the result message of generation ${g.id}`, generations.setPhotoMessage(g.id, messageId))
        if (alsoOriginal) {
          yield* bookkeeping(`the original of generation ${g.id}`, generations.setDocumentMessage(g.id, messageId))
        }
      })

    /** The uncompressed original; its failure never undoes the delivery. */
    const sendOriginal = (g: Generation, bytes: Uint8Array, filename: string) =>
      Effect.gen(function*() {
        const sent = yield* sending(
          "sendDocument",
          g,
          Effect.suspend(() =>
            telegram.sendDocument({
              chat_id: g.chatId,
              document: new InputFile(bytes, filename),
              caption: t(g.lang).originalCaption
            })
          )
        )
        if (Result.isFailure(sent)) {
          return yield* Effect.logWarning(`[GEN] generation ${g.id}: the original was not sent: ${sent.failure.message}`)
        }
        yield* bookkeeping(
          `the original of generation ${g.id}`,
          generations.setDocumentMessage(g.id, sent.success.message_id)
        )
      })

    /** The photo (or, refused as a photo, the document) with the done keyboard. */
    const sendResult = (g: Generation, bytes: Uint8Array): Effect.Effect<SendOutcome> =>
      Effect.gen(function*() {
        const info = imageInfo(bytes)
        const filename = filenameOf(g, bytes)
        const caption = t(g.lang).done
        const reply_markup = doneKeyboard(g.lang, g.id)
        if (fitsAsPhoto(bytes.length, info)) {
          const photo = yield* sending(
            "sendPhoto",
            g,
            Effect.suspend(() =>
              telegram.sendPhoto({ chat_id: g.chatId, photo: new InputFile(bytes, filename), caption, reply_markup })
            )
          )
          if (Result.isSuccess(photo)) {
            yield* recordResultMessage(g, photo.success.message_id, false)
            yield* logState(g.id, "photo sent", g.kieTaskId, `message ${photo.success.message_id}`)
            if (config.sendOriginalDocument) yield* sendOriginal(g, bytes, filename)
            return "sent"
          }
          // Telegram could not process it as a photo: it still goes, as a file.
          if (photo.failure._tag !== "TelegramBadRequest") return yield* sendFailed(g, "sendPhoto", photo.failure)
          yield* Effect.logWarning(
            `[GEN] generation ${g.id}: sendPhoto refused (${photo.failure.description}); sending a document`
          )
        }
        const document = yield* sending(
          "sendDocument",
          g,
          Effect.suspend(() =>
            telegram.sendDocument({ chat_id: g.chatId, document: new InputFile(bytes, filename), caption, reply_markup })
          )
        )
        if (Result.isFailure(document)) {
          if (document.failure._tag === "TelegramBadRequest") {
            yield* notices.fail(g, "delivery_failed", document.failure.message, t(g.lang).deliveryFailed)
            return "gone"
          }
          return yield* sendFailed(g, "sendDocument", document.failure)
        }
        yield* recordResultMessage(g, document.success.message_id, true)
        yield* logState(
          g.id,
          "result sent as a document",
          g.kieTaskId,
          `${bytes.length} bytes, message ${document.success.message_id}`
        )
        return "sent"
      })

    /** Sends what the row is still missing; false when the delivery cannot finish now. */
    const sendMissing = (g: Generation) =>
      Effect.gen(function*() {
        if (g.photoMessageId === null) {
          const bytes = yield* download(g)
          if (Option.isNone(bytes)) return false
          return (yield* sendResult(g, bytes.value)) === "sent"
        }
        if (config.sendOriginalDocument && g.documentMessageId === null) {
          // Resumed after the photo went out: only the original is missing.
          yield* logState(g.id, "resuming delivery: the photo was sent, sending the original")
          const bytes = yield* downloads.download(g.resultUrls[0] ?? "").pipe(
            Effect.retry(downloadPolicy),
            Effect.option
          )
          if (Option.isSome(bytes)) yield* sendOriginal(g, bytes.value, filenameOf(g, bytes.value))
          return true
        }
        yield* logState(g.id, "resuming delivery: the result was already sent")
        return true
      })

    const deliver = Effect.fn("Engine.deliver")(function*(id: string) {
      const found = yield* generations.find(id)
      if (Option.isNone(found) || found.value.status !== "succeeded") return
      let g = found.value
      const remembered = sentResults.get(id)
      if (g.photoMessageId === null && remembered !== undefined) {
        yield* recordResultMessage(g, remembered, false)
        g = { ...g, photoMessageId: remembered }
      }
      if (!(yield* sendMissing(g))) return
      const delivered = yield* bookkeeping(`generation ${g.id} as delivered`, generations.markDelivered(g.id))
      if (Option.isNone(delivered) || !delivered.value) return
      sentResults.delete(g.id)
      const now = yield* DateTime.now
      yield* logState(g.id, "succeeded → delivered", g.kieTaskId)
      yield* finished("delivered")
      yield* Metric.update(generationSecondsHistogram, secondsBetween(g.createdAt, now))
      if (g.statusMessageId !== null) yield* status.finalize(g, g.statusMessageId)
    }, (effect, id) =>
      effect.pipe(
        Effect.catch((error) => Effect.logWarning(`[GEN] delivering generation ${id}: ${error.message}; the sweep retries`)),
        Semaphore.withPermit(permits)
      ))

    return {
      start: (id) => term.startJob(`deliver:${id}`, deliver(id)),
      running: (id) => term.jobRunning(`deliver:${id}`),
      deliver
    }
  })
