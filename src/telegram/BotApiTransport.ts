/**
 * The HTTP transport of Bot API calls: the part of `fetch` grammY's client
 * uses, over `node:http` / `node:https` requests on keep-alive agents.
 *
 * When to use: give `transport.fetch` to grammY's `Api` as its `fetch`
 * option (`Telegram.ts` does). grammY keeps building the request (URL, JSON
 * or multipart body, headers), racing its own timeout and turning the
 * answer into `GrammyError` / `HttpError`; this module only moves bytes.
 *
 * Why not grammY's default (node-fetch) or Node's global `fetch` (undici):
 * both cost more CPU per call for what grammY needs, which is one POST and
 * `response.json()`. Client CPU per sendMessage through grammY
 * (`bench/botApiTransport.ts`, 10,000 calls 16 at a time, 3 rounds):
 * node-fetch 205–221 µs, this transport 99–113 µs, global fetch 281–339 µs
 * (which also rejects grammY's polyfilled AbortSignal without a wrapper).
 * In the service (`BENCH_ONLY=active`, 4 interleaved pairs) CPU per /start
 * went from 1168–1331 µs to 1041–1146 µs at 1,000/s.
 *
 * Details:
 * - The body is a string (JSON) sent with `content-length`, or a byte stream
 *   (grammY's multipart upload, a Node `Readable`) sent chunked; a stream
 *   that fails destroys the request.
 * - The answer is read whole (at most `maxResponseBytes`) before `fetch`
 *   resolves; `json()` parses it. grammY reads only `json()`, so a non-2xx
 *   Bot API answer (`{"ok":false,…}`) still becomes grammY's `GrammyError`.
 *   `status`, `statusText` and `ok` are there too.
 * - Connections: one keep-alive agent per protocol, at most `maxSockets` per
 *   host; an idle socket is closed after `idleSocketMillis` (or earlier when
 *   the server's `Keep-Alive: timeout=` hint says so).
 * - Abort: the `signal` grammY passes (ours, from the Effect's interruption
 *   or timeout, through grammY's controller) destroys the request at once.
 *
 * Gotchas: the URL holds the bot token (`/bot<token>/<method>`). No error
 * this module makes carries the URL or a message of Node's own: a network
 * failure is a `BotApiTransportError` with the errno code only, an abort is
 * an `AbortError`, a body that is not JSON has `type: "invalid-json"` (the
 * shapes `TelegramErrors.ts` reads). Redirects are not followed (the Bot API
 * does not redirect).
 */
import * as http from "node:http"
import * as https from "node:https"
import { Readable } from "node:stream"

/** Tuning of a transport; every field has a default. */
export interface BotApiTransportOptions {
  /** Connections per host at most (default 100); further requests wait in the agent's queue. */
  readonly maxSockets?: number
  /** An idle keep-alive connection is closed after this long (default 30 s). */
  readonly idleSocketMillis?: number
  /** A longer answer fails the call (default 16 MiB; Bot API answers are small). */
  readonly maxResponseBytes?: number
}

/** What `fetch` resolves with: the part of `Response` grammY and the tests read. */
export interface BotApiResponse {
  readonly status: number
  readonly statusText: string
  readonly ok: boolean
  /** The answer parsed as JSON; rejects with `type: "invalid-json"` when it is not. */
  readonly json: () => Promise<unknown>
  /** The answer as text. */
  readonly text: () => Promise<string>
}

/** `fetch`'s second argument as grammY fills it (plus `agent`, `compress`… which are ignored). */
export interface BotApiRequestInit {
  readonly method?: string | undefined
  readonly headers?: unknown
  readonly body?: unknown
  readonly signal?: AbortSignal | null | undefined
}

/** A transport: `fetch` for grammY, `close` to drop its connections. */
export interface BotApiTransport {
  readonly fetch: (url: string | URL, init?: BotApiRequestInit) => Promise<BotApiResponse>
  /** Destroys every connection (idle or in use); later calls open new ones. */
  readonly close: () => void
}

/**
 * A network failure without the URL or Node's message: `code` is the errno
 * (`ECONNREFUSED`, `ECONNRESET`, …) or one of this module's
 * (`RESPONSE_TOO_LARGE`, `BODY_STREAM_FAILED`).
 */
export class BotApiTransportError extends Error {
  readonly code: string
  constructor(code: string) {
    super(`Bot API request failed: ${code}`)
    this.name = "BotApiTransportError"
    this.code = code
  }
}

/** The answer was not JSON (the shape node-fetch gives, which `TelegramErrors.ts` knows). */
export class BotApiInvalidJson extends Error {
  readonly type = "invalid-json"
  constructor(status: number) {
    super(`Bot API answer (HTTP ${status}) was not JSON`)
    this.name = "BotApiInvalidJson"
  }
}

const abortError = () => {
  const error = new Error("The Bot API request was aborted")
  error.name = "AbortError"
  return error
}

/** An errno code as it may be shown; anything else is a plain "network error". */
const codeOf = (error: unknown): string => {
  const code = (error as { code?: unknown } | null)?.code
  return typeof code === "string" && /^[A-Z0-9_]{1,40}$/.test(code) ? code : "NETWORK_ERROR"
}

/**
 * grammY's headers are a plain object; a `Headers` or entry list is accepted
 * too. Told apart by shape, not `instanceof Headers`: naming the global
 * `Headers` loads Node's bundled undici (a few MiB of RSS for good).
 */
const headersOf = (headers: unknown): Record<string, string> => {
  if (headers === undefined || headers === null) return {}
  if (Array.isArray(headers)) return Object.fromEntries(headers)
  const entries = (headers as { entries?: unknown }).entries
  if (typeof entries === "function") {
    return Object.fromEntries((entries as () => Iterable<[string, string]>).call(headers))
  }
  return { ...(headers as Record<string, string>) }
}

const responseOf = (status: number, statusText: string, chunks: ReadonlyArray<Buffer>): BotApiResponse => {
  const text = () => chunks.length === 1 ? chunks[0]!.toString("utf8") : Buffer.concat(chunks).toString("utf8")
  return {
    status,
    statusText,
    ok: status >= 200 && status < 300,
    text: () => Promise.resolve(text()),
    json: () => {
      try {
        return Promise.resolve(JSON.parse(text()) as unknown)
      } catch {
        return Promise.reject(new BotApiInvalidJson(status))
      }
    }
  }
}

/** A transport with its own agents (one per protocol). */
export const make = (options: BotApiTransportOptions = {}): BotApiTransport => {
  const agentOptions = {
    keepAlive: true,
    maxSockets: options.maxSockets ?? 100,
    // Applies to idle sockets only: the agent destroys a free socket that times out, one in use is left alone.
    timeout: options.idleSocketMillis ?? 30_000,
    scheduling: "lifo" as const
  }
  const maxResponseBytes = options.maxResponseBytes ?? 16 * 1024 * 1024
  const httpAgent = new http.Agent(agentOptions)
  const httpsAgent = new https.Agent(agentOptions)

  const fetch = (url: string | URL, init: BotApiRequestInit = {}): Promise<BotApiResponse> =>
    new Promise<BotApiResponse>((resolve, reject) => {
      const signal = init.signal ?? undefined
      if (signal?.aborted) return reject(abortError())
      const target = typeof url === "string" ? new URL(url) : url
      const secure = target.protocol === "https:"
      const headers = headersOf(init.headers)
      const body = init.body
      const text = typeof body === "string" ? body : undefined
      if (text !== undefined) headers["content-length"] = String(Buffer.byteLength(text))
      else if (body instanceof Uint8Array) headers["content-length"] = String(body.byteLength)

      let settled = false
      const finish = (outcome: BotApiResponse | Error) => {
        if (settled) return
        settled = true
        signal?.removeEventListener("abort", onAbort)
        if (outcome instanceof Error) reject(outcome)
        else resolve(outcome)
      }
      const fail = (error: Error) => {
        finish(error)
        request.destroy()
      }
      const onAbort = () => fail(abortError())

      const request = (secure ? https : http).request({
        agent: secure ? httpsAgent : httpAgent,
        protocol: target.protocol,
        hostname: target.hostname.startsWith("[") ? target.hostname.slice(1, -1) : target.hostname,
        port: target.port,
        path: target.pathname + target.search,
        method: init.method ?? "GET",
        headers
      })
      request.on("error", (error) => finish(new BotApiTransportError(codeOf(error))))
      request.on("response", (response) => {
        const chunks: Array<Buffer> = []
        let size = 0
        response.on("data", (chunk: Buffer) => {
          size += chunk.length
          if (size > maxResponseBytes) return fail(new BotApiTransportError("RESPONSE_TOO_LARGE"))
          chunks.push(chunk)
        })
        response.on("end", () => finish(responseOf(response.statusCode ?? 0, response.statusMessage ?? "", chunks)))
        response.on("error", (error) => finish(new BotApiTransportError(codeOf(error))))
      })
      signal?.addEventListener("abort", onAbort)

      if (text !== undefined || body instanceof Uint8Array) {
        request.end(body)
      } else if (body === undefined || body === null) {
        request.end()
      } else {
        // grammY's multipart body: a Node `Readable` (an async iterable of bytes works too).
        const stream = body instanceof Readable ? body : Readable.from(body as AsyncIterable<Uint8Array>)
        stream.on("error", () => fail(new BotApiTransportError("BODY_STREAM_FAILED")))
        stream.pipe(request)
      }
    })

  const close = () => {
    httpAgent.destroy()
    httpsAgent.destroy()
  }

  return { fetch, close }
}
