/**
 * Downloads a generated image from the result URL Kie reported, so the bot
 * uploads the bytes itself (Telegram fetches photos by URL only up to 5 MB,
 * and Kie's temporary URLs may not be reachable from Telegram at all).
 *
 * Bounded in every way: only `http:`/`https:` URLs, at most `maxBytes`
 * (DOCUMENT_MAX_BYTES by default: nothing larger could be uploaded anyway),
 * checked against `Content-Length` first and counted while streaming, at most
 * `DOWNLOAD_TIMEOUT` for the whole transfer, at most 3 redirects.
 *
 * Result URLs are temporary capabilities: errors name the host, never the
 * whole URL.
 */
import { NodeHttpClient } from "@effect/platform-node"
import { Context, Duration, Effect, Layer, Schema, Stream } from "effect"
import { HttpClient } from "effect/http"
import { DOCUMENT_MAX_BYTES } from "./ImageInfo.ts"

/** The whole transfer of one image. */
export const DOWNLOAD_TIMEOUT = Duration.seconds(60)
/** Redirects followed at most. */
export const MAX_REDIRECTS = 3

/** A download that did not give usable bytes; `reason` says which bound or step failed. */
export class DownloadFailed extends Schema.TaggedError<DownloadFailed>()("DownloadFailed", {
  reason: Schema.Literals(["bad-url", "status", "too-large", "empty", "timeout", "transport"]),
  message: Schema.String
}) {}

/** Downloading one result image. */
export interface ResultDownloadShape {
  readonly download: (url: string, maxBytes?: number) => Effect.Effect<Uint8Array, DownloadFailed>
}

/** `host` of a URL for messages; never its path or query. */
export const hostOf = (url: string): string => {
  try {
    return new URL(url).host || "?"
  } catch {
    return "?"
  }
}

class TooLarge extends Schema.TaggedError<TooLarge>()("TooLarge", { bytes: Schema.Number }) {}

const make = Effect.gen(function*() {
  const client = (yield* HttpClient.HttpClient).pipe(HttpClient.followRedirects(MAX_REDIRECTS))

  const download = (url: string, maxBytes: number = DOCUMENT_MAX_BYTES): Effect.Effect<Uint8Array, DownloadFailed> =>
    Effect.gen(function*() {
      const host = hostOf(url)
      const failed = (reason: DownloadFailed["reason"], detail: string) =>
        new DownloadFailed({ reason, message: `downloading the result from ${host}: ${detail}` })
      let parsed: URL
      try {
        parsed = new URL(url)
      } catch {
        return yield* failed("bad-url", "not a URL")
      }
      if (parsed.protocol !== "http:" && parsed.protocol !== "https:") {
        return yield* failed("bad-url", `unsupported scheme ${parsed.protocol}`)
      }

      return yield* Effect.gen(function*() {
        const response = yield* client.get(parsed.href)
        if (response.status !== 200) return yield* failed("status", `HTTP ${response.status}`)
        const declared = Number(response.headers["content-length"])
        if (Number.isFinite(declared) && declared > maxBytes) {
          return yield* failed("too-large", `${declared} bytes declared, at most ${maxBytes} accepted`)
        }
        const chunks: Array<Uint8Array> = []
        let total = 0
        yield* Stream.runForEach(response.stream, (chunk) => {
          total += chunk.length
          if (total > maxBytes) return Effect.fail(new TooLarge({ bytes: total }))
          chunks.push(chunk)
          return Effect.void
        })
        if (total === 0) return yield* failed("empty", "the answer had no body")
        return new Uint8Array(Buffer.concat(chunks))
      }).pipe(
        Effect.catchTag(
          "TooLarge",
          (error) => Effect.fail(failed("too-large", `more than ${maxBytes} bytes (stopped at ${error.bytes})`))
        ),
        Effect.catchTag("HttpClientError", (error) => Effect.fail(failed("transport", error.reason._tag))),
        Effect.timeoutOrElse({
          duration: DOWNLOAD_TIMEOUT,
          orElse: () => Effect.fail(failed("timeout", `not finished within ${Duration.format(DOWNLOAD_TIMEOUT)}`))
        })
      )
    }).pipe(Effect.withSpan("ResultDownload.download"))

  return ResultDownload.of({ download })
})

/** Downloads result images within the bounds above. */
export class ResultDownload
  extends Context.Service<ResultDownload, ResultDownloadShape>()("zimage-bot/ResultDownload")
{
  /** On the HttpClient it is given. */
  static readonly layerNoHttp = Layer.effect(ResultDownload, make)
  /** On its own undici connection pool. */
  static readonly layer = ResultDownload.layerNoHttp.pipe(Layer.provide(NodeHttpClient.layerUndici))
}
