/**
 * Delivering a `succeeded` generation's picture, once as far as possible.
 *
 * When to use: `start` when a generation succeeds, and from the sweep for
 * every `succeeded` row (a running delivery is not started twice).
 *
 * Details: the result is downloaded (bounded, `ResultDownload`, each URL
 * retried by `downloadPolicy` unless the failure is permanent; a refused
 * address or non-image bytes fail the generation as `download_refused`),
 * sent as a photo with "✅ Готово!" and the
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
import { t } from "../texts/Messages.ts"
import { type Generation, Generations } from "../generations/Generations.ts"
import { type DownloadFailed, hostOf, isRefusal, isTransient, ResultDownload } from "../media/ResultDownload.ts"
import { AppConfig } from "../platform/AppConfig.ts"
import { generationSecondsHistogram } from "../observability/Metrics.ts"
import { backoff } from "../platform/Retry.ts"
import type { Telegram } from "../telegram/Telegram.ts"
import { bookkeeping, finished, logState, secondsBetween } from "./Bookkeeping.ts"
import type { EngineTerm } from "./EngineTerm.ts"
import type { FailureNotices } from "./FailureNotices.ts"
import * as ResultUpload from "./ResultUpload.ts"
import type { StatusMessages } from "./StatusMessages.ts"

/** Downloads and uploads at once. */
export const DELIVERY_CONCURRENCY = 4
/** Downloading the result: 3 more tries, 2 s, 4 s, 8 s apart (jittered). */
export const downloadPolicy = backoff("2 seconds", "8 seconds").pipe(Schedule.upTo({ times: 3 }))

/** A download retried by `downloadPolicy` while its failure may pass (not a refused address or non-image bytes). */
const retried = <A>(effect: Effect.Effect<A, DownloadFailed>) =>
  effect.pipe(Effect.retry({ schedule: downloadPolicy, while: isTransient }))

/** The deliveries of one term. */
export interface Delivery {
  /** Starts delivering `id` as a job (nothing if one runs already). */
  readonly start: (id: string) => Effect.Effect<void>
  /** Whether `id` is being delivered now. */
  readonly running: (id: string) => boolean
}

/** The deliveries of a term. */
export const make = (
  term: EngineTerm,
  parts: { readonly notices: Pick<FailureNotices, "fail">; readonly status: Pick<StatusMessages, "finalize"> }
): Effect.Effect<Delivery, never, AppConfig | Generations | ResultDownload | Telegram> =>
  Effect.gen(function*() {
    const { notices, status } = parts
    const config = yield* AppConfig
    const generations = yield* Generations
    const downloads = yield* ResultDownload
    const upload = yield* ResultUpload.make(notices)
    const permits = yield* Semaphore.make(DELIVERY_CONCURRENCY)

    const download = (g: Generation) =>
      Effect.gen(function*() {
        let last: DownloadFailed | undefined
        for (const url of g.resultUrls) {
          const result = yield* Effect.result(
            downloads.download(url).pipe(
              Effect.tapError((error) =>
                Effect.logWarning(
                  `[GEN] generation ${g.id}: ${error.message}; ${isTransient(error) ? "retrying" : "not retried"}`
                )
              ),
              retried
            )
          )
          if (Result.isSuccess(result)) return Option.some(result.success)
          last = result.failure
        }
        const refused = last !== undefined && isRefusal(last)
        yield* notices.fail(
          g,
          refused ? "download_refused" : "download_failed",
          last?.message ?? `no result URL (${g.resultUrls.map(hostOf).join(", ")})`,
          refused ? t(g.lang).deliveryRefused : t(g.lang).deliveryFailed
        )
        return Option.none<Uint8Array>()
      })

    /** Sends what the row is still missing; false when the delivery cannot finish now. */
    const sendMissing = (g: Generation) =>
      Effect.gen(function*() {
        if (g.photoMessageId === null) {
          const bytes = yield* download(g)
          if (Option.isNone(bytes)) return false
          return (yield* upload.sendResult(g, bytes.value)) === "sent"
        }
        if (config.sendOriginalDocument && g.documentMessageId === null) {
          // Resumed after the photo went out: only the original is missing.
          yield* logState(g.id, "resuming delivery: the photo was sent, sending the original")
          const bytes = yield* downloads.download(g.resultUrls[0] ?? "").pipe(retried, Effect.option)
          if (Option.isSome(bytes)) yield* upload.sendOriginal(g, bytes.value, ResultUpload.filenameOf(g, bytes.value))
          return true
        }
        yield* logState(g.id, "resuming delivery: the result was already sent")
        return true
      })

    /** Delivers `id` if it is `succeeded`; never fails (the sweep retries). */
    const deliver = Effect.fn("Engine.deliver")(function*(id: string) {
      yield* Effect.annotateCurrentSpan("generation_id", id)
      const found = yield* generations.find(id)
      if (Option.isNone(found) || found.value.status !== "succeeded") return
      let g = found.value
      const remembered = upload.remembered(id)
      if (g.photoMessageId === null && remembered !== undefined) {
        yield* upload.recordResultMessage(g, remembered, false)
        g = { ...g, photoMessageId: remembered }
      }
      if (!(yield* sendMissing(g))) return
      const delivered = yield* bookkeeping(`generation ${g.id} as delivered`, generations.markDelivered(g.id))
      if (Option.isNone(delivered) || !delivered.value) return
      upload.forget(g.id)
      const now = yield* DateTime.now
      yield* logState(g.id, "succeeded → delivered", g.kieTaskId)
      yield* finished("delivered")
      yield* Metric.update(generationSecondsHistogram, secondsBetween(g.createdAt, now))
      if (g.statusMessageId !== null) yield* status.finalize(g, g.statusMessageId)
    }, (effect, id) =>
      effect.pipe(
        Effect.catch((error) =>
          Effect.logWarning(`[GEN] delivering generation ${id}: ${error.message}; the sweep retries`)
        ),
        Semaphore.withPermit(permits)
      ))

    return {
      start: (id) => term.startJob(`deliver:${id}`, deliver(id)),
      running: (id) => term.jobRunning(`deliver:${id}`)
    }
  })
