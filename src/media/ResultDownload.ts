/**
 * Downloads a generated image from the result URL Kie reported, so the bot
 * uploads the bytes itself (Telegram fetches photos by URL only up to 5 MB,
 * and Kie's temporary URLs may not be reachable from Telegram at all).
 *
 * A result URL comes from outside (Kie's answer or a callback anyone may
 * try to forge), so the download must not be turned inward:
 *
 * - only `http:`/`https:`, at most `MAX_REDIRECTS` redirects, each hop
 *   checked like the first;
 * - the host is resolved once (`Resolve`), every address checked
 *   (`PrivateAddress`), and the socket opened to exactly those addresses
 *   (`PinnedLookup`); a loopback, private or link-local address is refused
 *   unless ALLOW_PRIVATE_RESULT_URLS is set or KIE_BASE_URL itself is on such
 *   an address (a local double, as in tests and the sandbox);
 * - the bytes must start like a PNG, JPEG, WebP or GIF (`ImageMagic`),
 *   checked as soon as the first bytes arrive;
 * - at most `maxBytes` (DOCUMENT_MAX_BYTES by default: nothing larger could be
 *   uploaded anyway), checked against `Content-Length` first and counted while
 *   reading into one buffer (`BoundedBody`); at most `DOWNLOAD_TIMEOUT` for
 *   the whole transfer.
 *
 * Result URLs are temporary capabilities: errors name the host, never the
 * whole URL.
 */
import { Context, Duration, Effect, Layer, Schema } from "effect"
import * as http from "node:http"
import * as https from "node:https"
import { version } from "../observability/Health.ts"
import { AppConfig } from "../platform/AppConfig.ts"
import { BoundedBody } from "./BoundedBody.ts"
import { DOCUMENT_MAX_BYTES } from "./ImageInfo.ts"
import { imageKind, MAGIC_BYTES } from "./ImageMagic.ts"
import { pinnedLookup, type Resolve, type ResolvedAddress, systemResolve } from "./PinnedLookup.ts"
import { bareAddress, isIpAddress, isPrivateAddress } from "./PrivateAddress.ts"

/** The whole transfer of one image. */
export const DOWNLOAD_TIMEOUT = Duration.seconds(60)
/** Redirects followed at most. */
export const MAX_REDIRECTS = 3
/** Browser-like, as for Kie's API: Cloudflare in front of file hosts may refuse requests without one. */
export const DOWNLOAD_USER_AGENT = `Mozilla/5.0 (compatible; zimage-bot/${version})`

/** A download that did not give usable bytes; `reason` says which bound or step failed. */
export class DownloadFailed extends Schema.TaggedError<DownloadFailed>()("DownloadFailed", {
  reason: Schema.Literals([
    "bad-url",
    "refused",
    "redirects",
    "status",
    "too-large",
    "empty",
    "not-image",
    "timeout",
    "transport"
  ]),
  message: Schema.String
}) {}

/**
 * Whether trying the same URL again may help. A refused address, a URL that
 * is not http(s), a redirect loop, an oversized body or bytes that are not an
 * image will be the same next time.
 */
export const isTransient = (error: DownloadFailed): boolean =>
  error.reason === "status" || error.reason === "empty" || error.reason === "timeout" ||
  error.reason === "transport"

/** Whether the result itself is unacceptable (not an image, or where the bot must not go), not just unreachable. */
export const isRefusal = (error: DownloadFailed): boolean =>
  error.reason === "refused" || error.reason === "not-image" || error.reason === "bad-url"

/** Downloading one result image. */
export interface ResultDownloadShape {
  readonly download: (url: string, maxBytes?: number) => Effect.Effect<Uint8Array, DownloadFailed>
}

/** For tests, which can only serve from loopback: the resolver and the address check to use. */
export interface ResultDownloadOptions {
  /** Instead of the system resolver: names that are not in DNS, answers that change. */
  readonly resolve?: Resolve
  /** Instead of `isPrivateAddress`: lets a test count its own 127.0.0.1 server as public. */
  readonly isPrivate?: (address: string) => boolean
}

/** `host` of a URL for messages; never its path or query. */
export const hostOf = (url: string): string => {
  try {
    return new URL(url).host || "?"
  } catch {
    return "?"
  }
}

const failure = (host: string, reason: DownloadFailed["reason"], detail: string) =>
  new DownloadFailed({ reason, message: `downloading the result from ${host}: ${detail}` })

/** `url` (relative to `base` for a redirect's Location) as an http(s) URL. */
const parseUrl = (url: string, base?: URL): Effect.Effect<URL, DownloadFailed> => {
  let parsed: URL
  try {
    parsed = new URL(url, base)
  } catch {
    return Effect.fail(failure(base?.host ?? "?", "bad-url", "not a URL"))
  }
  return parsed.protocol === "http:" || parsed.protocol === "https:"
    ? Effect.succeed(parsed)
    : Effect.fail(failure(parsed.host || "?", "bad-url", `unsupported scheme ${parsed.protocol}`))
}

/** The code of a socket or DNS error (`ECONNREFUSED`), never its message (which may carry the address). */
const errorCode = (error: unknown): string =>
  (typeof error === "object" && error !== null && "code" in error && typeof error.code === "string")
    ? error.code
    : error instanceof Error
    ? error.name
    : "error"

const make = (options: ResultDownloadOptions) =>
  Effect.gen(function*() {
    const config = yield* AppConfig
    const resolve = options.resolve ?? systemResolve
    const isPrivate = options.isPrivate ?? isPrivateAddress

    /** Every address of `host`: the literal itself, or what the resolver answers. */
    const addressesOf = (host: string): Effect.Effect<ReadonlyArray<ResolvedAddress>, unknown> => {
      const bare = bareAddress(host)
      if (isIpAddress(bare)) return Effect.succeed([{ address: bare, family: bare.includes(":") ? 6 : 4 }])
      return Effect.tryPromise({ try: () => resolve(bare), catch: (error) => error })
    }

    /** KIE_BASE_URL on a private address means a local double whose result URLs are local too. */
    const kieBaseIsPrivate = addressesOf(new URL(config.kieBaseUrl).hostname).pipe(
      Effect.map((addresses) => addresses.some((a) => isPrivate(a.address))),
      Effect.orElseSucceed(() => false)
    )
    const privateAllowed = config.allowPrivateResultUrls ? Effect.succeed(true) : kieBaseIsPrivate

    /** The addresses the download of `url` may connect to; refused when any is private and that is not allowed. */
    const checkedAddresses = (url: URL) =>
      Effect.gen(function*() {
        const addresses = yield* addressesOf(url.hostname).pipe(
          Effect.mapError((error) => failure(url.host, "transport", `resolving the host: ${errorCode(error)}`))
        )
        if (addresses.length === 0) return yield* failure(url.host, "transport", "the host has no address")
        if (addresses.some((a) => isPrivate(a.address)) && !(yield* privateAllowed)) {
          return yield* failure(url.host, "refused", "a loopback, private or link-local address is not allowed")
        }
        return addresses
      })

    const download = (url: string, maxBytes: number = DOCUMENT_MAX_BYTES): Effect.Effect<Uint8Array, DownloadFailed> =>
      Effect.gen(function*() {
        let current = yield* parseUrl(url)
        for (let hop = 0;; hop++) {
          const addresses = yield* checkedAddresses(current)
          const answer = yield* fetchOnce(current, addresses, maxBytes)
          if (answer._tag === "body") return answer.bytes
          if (hop >= MAX_REDIRECTS) {
            return yield* failure(current.host, "redirects", `more than ${MAX_REDIRECTS} redirects`)
          }
          current = yield* parseUrl(answer.location, current)
        }
      }).pipe(
        Effect.timeoutOrElse({
          duration: DOWNLOAD_TIMEOUT,
          orElse: () =>
            Effect.fail(failure(hostOf(url), "timeout", `not finished within ${Duration.format(DOWNLOAD_TIMEOUT)}`))
        }),
        Effect.withSpan("ResultDownload.download", { attributes: { "server.address": hostOf(url) } })
      )

    return ResultDownload.of({ download })
  })

/** What one request gave: the image, or where a redirect points. */
type Answer =
  | { readonly _tag: "body"; readonly bytes: Uint8Array }
  | { readonly _tag: "redirect"; readonly location: string }

const REDIRECTS = new Set([301, 302, 303, 307, 308])

/** One GET of `url` on a socket to `addresses` only; the socket is destroyed when interrupted. */
const fetchOnce = (url: URL, addresses: ReadonlyArray<ResolvedAddress>, maxBytes: number) =>
  Effect.callback<Answer, DownloadFailed>((resume) => {
    let settled = false
    const settle = (effect: Effect.Effect<Answer, DownloadFailed>) => {
      if (settled) return
      settled = true
      resume(effect)
    }
    const fail = (reason: DownloadFailed["reason"], detail: string) => {
      settle(Effect.fail(failure(url.host, reason, detail)))
      request.destroy()
    }
    const request = (url.protocol === "https:" ? https : http).request(url, {
      method: "GET",
      agent: false,
      lookup: pinnedLookup(addresses),
      headers: { accept: "image/png, image/jpeg, image/webp, image/gif", "user-agent": DOWNLOAD_USER_AGENT }
    })
    request.on("error", (error) => fail("transport", errorCode(error)))
    request.on("response", (response) => {
      const status = response.statusCode ?? 0
      const location = response.headers.location
      if (REDIRECTS.has(status) && location !== undefined) {
        settle(Effect.succeed({ _tag: "redirect", location }))
        request.destroy()
      } else if (status !== 200) {
        fail("status", `HTTP ${status}`)
      } else {
        readBody(response, maxBytes, fail, (bytes) => settle(Effect.succeed({ _tag: "body", bytes })))
      }
    })
    request.end()
    return Effect.sync(() => {
      settled = true
      request.destroy()
    })
  })

/** Reads a 200 answer into one bounded buffer, refusing it as soon as it is too large or not an image. */
const readBody = (
  response: http.IncomingMessage,
  maxBytes: number,
  fail: (reason: DownloadFailed["reason"], detail: string) => void,
  done: (bytes: Uint8Array) => void
) => {
  const header = response.headers["content-length"]
  const declared = header === undefined ? undefined : Number(header)
  const known = declared !== undefined && Number.isSafeInteger(declared) && declared >= 0 ? declared : undefined
  if (known !== undefined && known > maxBytes) {
    return fail("too-large", `${known} bytes declared, at most ${maxBytes} accepted`)
  }
  const contentType = String(response.headers["content-type"] ?? "none").slice(0, 60)
  const notImage = () => fail("not-image", `the answer is not a PNG, JPEG, WebP or GIF image (${contentType})`)
  const body = new BoundedBody(maxBytes, known)
  let sniffed = false
  response.on("data", (chunk: Buffer) => {
    if (!body.append(chunk)) return fail("too-large", `more than ${maxBytes} bytes`)
    if (!sniffed && body.size >= MAGIC_BYTES) {
      sniffed = true
      if (imageKind(body.bytes()) === undefined) notImage()
    }
  })
  response.on("end", () => {
    if (body.size === 0) fail("empty", "the answer had no body")
    else if (imageKind(body.bytes()) === undefined) notImage()
    else done(body.bytes())
  })
  response.on("error", (error) => fail("transport", errorCode(error)))
  response.on("close", () => {
    if (!response.complete) fail("transport", "the connection closed before the body ended")
  })
}

/** Downloads result images within the bounds above. */
export class ResultDownload
  extends Context.Service<ResultDownload, ResultDownloadShape>()("zimage-bot/ResultDownload")
{
  /** With the system resolver. */
  static readonly layer = Layer.effect(ResultDownload, make({}))
  /** For tests: with their own resolver or address check. */
  static readonly layerWith = (options: ResultDownloadOptions) => Layer.effect(ResultDownload, make(options))
}
