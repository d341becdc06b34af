/**
 * Sending a delivered picture to Telegram: the photo (or the document when
 * Telegram will not take it as a photo) with the done keyboard, then the
 * uncompressed original; each message id recorded at once.
 *
 * When to use: by `Delivery`, once the bytes are downloaded.
 *
 * Details: a send is retried on transient Telegram errors (`sendPolicy`).
 *
 * | Telegram answers the photo   | then                                         |
 * | ---------------------------- | -------------------------------------------- |
 * | sent                         | recorded; the original follows (if enabled)  |
 * | 400 (not a photo it takes)   | sent as a document with the same caption     |
 * | chat blocked                 | failed, nobody to tell (`gone`)              |
 * | anything else                | the sweep tries again (`later`)              |
 *
 * A document refused with 400 fails the generation as undeliverable.
 *
 * Gotchas: the id of a result message Telegram accepted is also remembered in
 * memory for the term (`remembered`), so a recording that failed is not a
 * reason to send the picture again; only a new leader can send it twice.
 */
import { Effect, Result, Schedule } from "effect"
import { InputFile } from "grammy"
import { doneKeyboard, t } from "../texts/Messages.ts"
import { type Generation, Generations } from "../generations/Generations.ts"
import { fitsAsPhoto, imageInfo } from "../media/ImageInfo.ts"
import { imageKind } from "../media/ImageMagic.ts"
import { AppConfig } from "../platform/AppConfig.ts"
import { backoff } from "../platform/Retry.ts"
import { Telegram, type TelegramError } from "../telegram/Telegram.ts"
import { bookkeeping, inTopicOf, logState } from "./Bookkeeping.ts"
import type { FailureNotices } from "./FailureNotices.ts"
import { TRANSIENT_TELEGRAM } from "./StatusMessages.ts"

/** Sending the result after a transient Telegram error: up to 6 more tries, 2 s doubling to 30 s. */
export const sendPolicy = backoff("2 seconds", "30 seconds").pipe(Schedule.upTo({ times: 6 }))

/** What became of a result send: sent, never deliverable (failed), or to be tried again later. */
export type SendOutcome = "sent" | "gone" | "later"

/** The file name a result is sent under. */
export const filenameOf = (g: Generation, bytes: Uint8Array) => {
  const kind = imageKind(bytes)
  return `zimage-${g.id}.${kind === "jpeg" ? "jpg" : kind ?? "png"}`
}

/** Result messages of one term. */
export interface ResultUpload {
  /** The photo or document with the done keyboard, recorded; then the original if configured. */
  readonly sendResult: (g: Generation, bytes: Uint8Array) => Effect.Effect<SendOutcome>
  /** The uncompressed original; its failure never undoes the delivery. */
  readonly sendOriginal: (g: Generation, bytes: Uint8Array, filename: string) => Effect.Effect<void>
  /** Records (and remembers for the term) the result message of `g`. */
  readonly recordResultMessage: (g: Generation, messageId: number, alsoOriginal: boolean) => Effect.Effect<void>
  /** The result message Telegram accepted for `id` this term, if any. */
  readonly remembered: (id: string) => number | undefined
  /** Forgets `id` once it is delivered. */
  readonly forget: (id: string) => void
}

/** The result messages of a term. */
export const make = (
  notices: Pick<FailureNotices, "fail">
): Effect.Effect<ResultUpload, never, AppConfig | Generations | Telegram> =>
  Effect.gen(function*() {
    const config = yield* AppConfig
    const generations = yield* Generations
    const telegram = yield* Telegram
    /** Result messages Telegram accepted this term, in case recording them failed. */
    const sentResults = new Map<string, number>()

    /** A Telegram send, retried on transient errors (see the duplicate window in `Delivery`). */
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
              ...inTopicOf(g),
              document: new InputFile(bytes, filename),
              caption: t(g.lang).originalCaption
            })
          )
        )
        if (Result.isFailure(sent)) {
          return yield* Effect.logWarning(
            `[GEN] generation ${g.id}: the original was not sent: ${sent.failure.message}`
          )
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
              telegram.sendPhoto({
                chat_id: g.chatId,
                ...inTopicOf(g),
                photo: new InputFile(bytes, filename),
                caption,
                reply_markup
              })
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
            telegram.sendDocument({
              chat_id: g.chatId,
              ...inTopicOf(g),
              document: new InputFile(bytes, filename),
              caption,
              reply_markup
            })
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

    return {
      sendResult,
      sendOriginal,
      recordResultMessage,
      remembered: (id) => sentResults.get(id),
      forget: (id) => {
        sentResults.delete(id)
      }
    }
  })
