/**
 * One HTTP exchange with Kie.ai: the request leaves with the API key, our
 * User-Agent and `Accept: application/json`, under KIE_REQUEST_TIMEOUT_MS,
 * and comes back as an `Exchange` saying what happened before anyone looks
 * at the body.
 *
 * When to use: by the calls (`KieCreateTask.ts`, `KieRecordInfo.ts`), which
 * decode the answer and decide what an `Exchange` means for them.
 *
 * Details: the line that matters is whether a request may have reached Kie.
 * `NotSent` (no connection was made: refused, DNS, unreachable, connect
 * timeout, TLS) proves nothing was sent; `Lost` (the connection broke
 * afterwards, or the answer broke off) and `TimedOut` do not, which for
 * createTask means a task may exist.
 *
 * Gotchas: the API key is only ever put into the Authorization header; every
 * message we build is scrubbed of it anyway (`scrub`, `scrubError`), and no
 * HTTP client error object (which holds the request and its headers) is kept.
 */
import { Duration, Effect, Redacted } from "effect"
import { HttpClient, HttpClientRequest } from "effect/http"
import type * as HttpClientError from "effect/http/HttpClientError"
import { AppConfig } from "../platform/AppConfig.ts"
import { CONNECT_TIMEOUT_CODE } from "../platform/ConnectTimeoutAgents.ts"
import { version } from "../observability/Health.ts"
import * as Metrics from "../observability/Metrics.ts"
import type { KieError } from "./KieErrors.ts"
import { clip } from "./KieSchema.ts"

/**
 * Sent explicitly: Cloudflare in front of Kie is reported to reject requests
 * without a browser-like User-Agent with a 403 that looks like an auth error.
 */
export const USER_AGENT = `Mozilla/5.0 (compatible; zimage-bot/${version})`

/** Error codes that mean no connection was made, so nothing was sent. */
const NOT_CONNECTED_CODES = new Set([
  "ECONNREFUSED",
  "ENOTFOUND",
  "EAI_AGAIN",
  "EAI_NONAME",
  "EHOSTUNREACH",
  "ENETUNREACH",
  "EHOSTDOWN",
  "ENETDOWN",
  "EADDRNOTAVAIL",
  CONNECT_TIMEOUT_CODE,
  "ERR_TLS_CERT_ALTNAME_INVALID",
  "CERT_HAS_EXPIRED",
  "UNABLE_TO_VERIFY_LEAF_SIGNATURE",
  "DEPTH_ZERO_SELF_SIGNED_CERT",
  "SELF_SIGNED_CERT_IN_CHAIN"
])

/** The error codes found on a cause, its `cause` chain and an AggregateError's members. */
const errorCodes = (cause: unknown, depth = 0): Array<string> => {
  if (depth > 4 || typeof cause !== "object" || cause === null) return []
  const own = (cause as { code?: unknown }).code
  const codes = typeof own === "string" ? [own] : []
  const nested = (cause as { cause?: unknown }).cause
  const members = (cause as { errors?: unknown }).errors
  return [
    ...codes,
    ...errorCodes(nested, depth + 1),
    ...(Array.isArray(members) ? members.flatMap((m) => errorCodes(m, depth + 1)) : [])
  ]
}

const describeCause = (cause: unknown): string => {
  const codes = errorCodes(cause)
  const message =
    typeof cause === "object" && cause !== null && typeof (cause as { message?: unknown }).message === "string"
      ? (cause as { message: string }).message
      : ""
  return clip(
    [codes[0], message].filter((s) => s !== undefined && s !== "").join(" ") || "unknown transport error",
    200
  )
}

/** What happened to one HTTP exchange, before looking at the body. */
export type Exchange =
  | { readonly _tag: "Answered"; readonly status: number; readonly text: string }
  | { readonly _tag: "NotSent"; readonly detail: string }
  | { readonly _tag: "Lost"; readonly detail: string }
  | { readonly _tag: "TimedOut" }

const classifyClientError = (error: HttpClientError.HttpClientError): Exchange => {
  const reason = error.reason
  switch (reason._tag) {
    case "InvalidUrlError":
    case "EncodeError":
      return { _tag: "NotSent", detail: `${reason._tag}: ${describeCause(reason.cause)}` }
    case "TransportError": {
      const codes = errorCodes(reason.cause)
      return codes.some((code) => NOT_CONNECTED_CODES.has(code))
        ? { _tag: "NotSent", detail: describeCause(reason.cause) }
        : { _tag: "Lost", detail: describeCause(reason.cause) }
    }
    default:
      // The response head arrived but its body could not be read.
      return { _tag: "Lost", detail: `the answer broke off (HTTP ${reason.response.status})` }
  }
}

/** The body as JSON, or `undefined` if it is not JSON (the decoders report that). */
export const parseJson = (text: string): unknown => {
  try {
    return JSON.parse(text)
  } catch {
    return undefined
  }
}

/** Belt and braces: `text` with `apiKey` cut out (a key under 6 characters is not looked for). */
export const scrubKey = (apiKey: string) => (text: string): string =>
  apiKey.length >= 6 ? text.split(apiKey).join("<redacted>") : text

/**
 * Counts one request sent to Kie in `zimage_kie_calls_total{method,result}`:
 * `result` is "ok" or the error's tag (`insufficient_credits`,
 * `rate_limited`, `create_task_uncertain`, …). Each retry is a request of its
 * own; a request refused before sending (validation) is not counted.
 */
export const counted = <A, E>(method: "createTask" | "recordInfo" | "upload", request: Effect.Effect<A, E>) =>
  request.pipe(Effect.onExit(Metrics.countExit(Metrics.kieCalls, method, "Kie")))

/** Kie's HTTP side, as the calls use it. */
export interface KieHttp {
  /** KIE_BASE_URL followed by `path`. */
  readonly url: (path: string) => string
  /** KIE_REQUEST_TIMEOUT_MS, for messages. */
  readonly timeoutMillis: number
  /** Sends one request and reads the whole answer; never fails (what happened is the `Exchange`). */
  readonly exchange: (request: HttpClientRequest.HttpClientRequest) => Effect.Effect<Exchange>
  /** `text` without the API key. */
  readonly scrub: (text: string) => string
  /** The same error with the key cut out of its message (Kie could echo it back in `msg`). */
  readonly scrubError: <E extends KieError>(error: E) => E
}

/** Kie's HTTP side on the given `HttpClient`. */
export const makeKieHttp: Effect.Effect<KieHttp, never, AppConfig | HttpClient.HttpClient> = Effect.gen(function*() {
  const config = yield* AppConfig
  const client = yield* HttpClient.HttpClient
  const scrub = scrubKey(Redacted.value(config.kieApiKey))

  function scrubError<E extends KieError>(error: E): E {
    const clean = scrub(error.message)
    return clean === error.message
      ? error
      : Object.assign(Object.create(Object.getPrototypeOf(error)), error, { message: clean })
  }

  const withKey = (request: HttpClientRequest.HttpClientRequest) =>
    request.pipe(
      HttpClientRequest.bearerToken(config.kieApiKey),
      HttpClientRequest.setHeader("user-agent", USER_AGENT),
      HttpClientRequest.acceptJson
    )

  const exchange = (request: HttpClientRequest.HttpClientRequest): Effect.Effect<Exchange> =>
    client.execute(withKey(request)).pipe(
      Effect.flatMap((response) =>
        Effect.map(response.text, (text): Exchange => ({ _tag: "Answered", status: response.status, text }))
      ),
      Effect.timeoutOrElse({
        duration: config.kieRequestTimeout,
        orElse: () => Effect.succeed<Exchange>({ _tag: "TimedOut" })
      }),
      Effect.catch((error) => Effect.succeed(classifyClientError(error)))
    )

  return {
    url: (path) => `${config.kieBaseUrl}${path}`,
    timeoutMillis: Duration.toMillis(config.kieRequestTimeout),
    exchange,
    scrub,
    scrubError
  }
})
