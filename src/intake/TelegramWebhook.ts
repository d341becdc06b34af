/**
 * `POST /telegram/webhook`, on ACTIVE and PASSIVE instances alike:
 *
 * - 401 unless `X-Telegram-Bot-Api-Secret-Token` equals the configured secret
 *   (constant-time). In long-polling mode no secret is configured, so every
 *   request is 401: nothing but Telegram may feed the inbox, and Telegram does
 *   not call a bot that polls.
 * - 413 for a body over 1 MiB: a `Content-Length` over the limit is refused
 *   before reading; a chunked body is counted and refused at the limit.
 * - 400 for a body that is not JSON or has no integer `update_id`.
 * - 503 when the update cannot be stored (Telegram retries).
 * - 200 only once the update is committed; a duplicate `update_id` is 200 and
 *   stored once.
 *
 * The answer body never carries a `method`, so Telegram never reads it as a
 * webhook reply.
 *
 * Two ways in, one behaviour. The common request (the right secret, a
 * `Content-Length` within the limit, nothing unusual) is answered straight
 * from Node's `request` event (`DirectRoutes` in `platform/HttpServer.ts`):
 * Effect's router and request handling cost more CPU than the rest of an
 * acknowledgement, and the webhook is the one hot path. Everything else (a
 * wrong secret, no or an oversized `Content-Length`, chunked bodies,
 * `Expect: 100-continue`) goes to the router's route, which handles every
 * case. Both parse the body with the same functions and store the update
 * through the same group commit, and both trace the request as
 * `TelegramWebhook.handle` under a server span with `http.route`. The direct
 * route runs no fiber and no Effect per request (`Inbox.storeUnsafe`, spans
 * from `platform/PlainSpans.ts`): with them, a fiber per request, a timeout
 * race of two more and their steps took about a third of an
 * acknowledgement's CPU (`docs/benchmarks.md`).
 */
import { ByteSize, Effect, Exit, Layer, Metric, Option, Redacted, Schema } from "effect"
import { HttpIncomingMessage, HttpRouter, HttpServerRequest, HttpServerResponse } from "effect/http"
import { createHash, timingSafeEqual } from "node:crypto"
import type { IncomingMessage, ServerResponse } from "node:http"
import { AppConfig } from "../platform/AppConfig.ts"
import { type DirectHandler, DirectRoutes } from "../platform/HttpServer.ts"
import { Inbox, type InboxShape } from "../inbox/Inbox.ts"
import * as Metrics from "../observability/Metrics.ts"
import { type PlainSpans, plainSpans } from "../platform/PlainSpans.ts"
import { parseSafeJson } from "../telegram/SafeJson.ts"
import { UpdateEnvelope } from "../telegram/TelegramUpdate.ts"

/** Where Telegram posts updates (the path of the webhook URL we register). */
export const WEBHOOK_PATH = "/telegram/webhook"
/** The largest body accepted (1 MiB); anything bigger is 413. */
export const MAX_BODY_BYTES = 1024 * 1024
/** The header Telegram carries our webhook secret in (lower case, as Node gives headers). */
export const SECRET_HEADER = "x-telegram-bot-api-secret-token"

const digest = (value: string) => createHash("sha256").update(value, "utf8").digest()

/**
 * A constant-time check of the secret header; hashing first makes different
 * lengths take the same time too. The expected digest is computed once: a
 * SHA-256 per request is a measurable share of a webhook's CPU time.
 */
export const makeSecretCheck = (expected: Option.Option<Redacted.Redacted<string>>) => {
  const expectedDigest = Option.map(expected, (secret) => digest(Redacted.value(secret)))
  return (given: string | undefined): boolean =>
    Option.isSome(expectedDigest) && given !== undefined && timingSafeEqual(expectedDigest.value, digest(given))
}

/** An answer of the webhook: its status and its JSON body, serialized once. */
interface Reply {
  readonly status: number
  readonly body: Record<string, unknown>
  /** The body as JSON text (ASCII): Node writes a string body in one write with the headers. */
  readonly text: string
}

const reply = (status: number, body: Record<string, unknown>): Reply => ({
  status,
  body,
  text: JSON.stringify(body)
})

const STORED = reply(200, { ok: true, duplicate: false })
const DUPLICATE = reply(200, { ok: true, duplicate: true })
const UNAUTHORIZED = reply(401, { ok: false, error: "unauthorized" })
const TOO_LARGE = reply(413, { ok: false, error: "payload too large (limit 1 MiB)" })
const UNREADABLE = reply(400, { ok: false, error: "unreadable body" })
const NOT_AN_UPDATE = reply(400, { ok: false, error: "expected a JSON object with an integer update_id" })
const UNAVAILABLE = reply(503, { ok: false, error: "temporarily unavailable, retry later" })

/** The reply as an Effect response (the router's route). */
const answer = (replied: Reply) =>
  HttpServerResponse.jsonUnsafe(replied.body, { status: replied.status, headers: { "cache-control": "no-store" } })

/** Writes the reply on a Node response (the direct route); the same headers as `answer`'s. */
const send = (response: ServerResponse, replied: Reply): void => {
  if (response.headersSent || response.destroyed) return
  response.writeHead(replied.status, {
    "content-type": "application/json",
    "cache-control": "no-store",
    "content-length": replied.text.length
  })
  response.end(replied.text)
}

const decodeEnvelope = Schema.decodeUnknownOption(UpdateEnvelope)
const utf8 = new TextDecoder("utf-8", { fatal: true })

/** New updates stored from webhooks (duplicates are not counted). */
const receivedByWebhook = Metrics.seriesOf(Metrics.updatesReceived, { source: "webhook" })

/** The body as JSON that `jsonb` can store (NUL and lone surrogates replaced), if it is JSON. */
const parseJson = (bytes: ArrayBuffer | Uint8Array): Option.Option<unknown> => {
  try {
    return Option.some(parseSafeJson(utf8.decode(bytes)))
  } catch {
    return Option.none()
  }
}

/** The update in a body, if the body is a JSON object with an integer `update_id`. */
const parseUpdate = (bytes: ArrayBuffer | Uint8Array): Option.Option<UpdateEnvelope> =>
  Option.flatMap(parseJson(bytes), decodeEnvelope)

/** Stores the update and says what to answer: 200 once committed, 503 if it cannot be. */
const storeUpdate = (update: UpdateEnvelope): Effect.Effect<Reply, never, Inbox> =>
  Effect.gen(function*() {
    // The update's trace starts here: Inbox.store, Inbox.claim, Dispatcher.handlerRun, Inbox.complete.
    yield* Effect.annotateCurrentSpan("update_id", update.update_id)
    const inbox = yield* Inbox
    return yield* inbox.store([update]).pipe(
      Effect.tap((stored) => Metric.update(receivedByWebhook, stored)),
      Effect.map((stored) => stored === 0 ? DUPLICATE : STORED),
      // The inbox logs the outage once; each refused update is only worth a debug line.
      Effect.catchTag(
        "InboxUnavailable",
        (error) =>
          Effect.logDebug(`[WEBHOOK] update ${update.update_id} not stored, answering 503: ${error.message}`)
            .pipe(Effect.as(UNAVAILABLE))
      )
    )
  })

const handleWebhook = (secretMatches: (given: string | undefined) => boolean) =>
  Effect.gen(function*() {
    const request = yield* HttpServerRequest.HttpServerRequest
    if (!secretMatches(request.headers[SECRET_HEADER])) return answer(UNAUTHORIZED)
    const declared = request.headers["content-length"]
    if (declared !== undefined && /^\d+$/.test(declared) && Number(declared) > MAX_BODY_BYTES) {
      return answer(TOO_LARGE)
    }
    const body = yield* request.arrayBuffer.pipe(
      Effect.provideService(HttpIncomingMessage.MaxBodySize, ByteSize.bytes(BigInt(MAX_BODY_BYTES))),
      Effect.map((bytes) => ({ _tag: "Read" as const, bytes })),
      Effect.catchTag("HttpServerError", (error) =>
        Effect.succeed(
          error.reason._tag === "RequestParseError" && error.reason.reason === "BodyTooLarge"
            ? { _tag: "TooLarge" as const }
            : { _tag: "Unreadable" as const }
        ))
    )
    if (body._tag === "TooLarge") return answer(TOO_LARGE)
    if (body._tag === "Unreadable") return answer(UNREADABLE)
    const update = parseUpdate(body.bytes)
    if (Option.isNone(update)) return answer(NOT_AN_UPDATE)
    return answer(yield* storeUpdate(update.value))
  }).pipe(Effect.withSpan("TelegramWebhook.handle"))

/** True for the requests the direct route takes: the right secret and a plain body within the limit. */
const isPlain = (request: IncomingMessage, secretMatches: (given: string | undefined) => boolean): boolean => {
  const headers = request.headers
  const declared = headers["content-length"]
  return declared !== undefined && headers["transfer-encoding"] === undefined && headers.expect === undefined &&
    /^\d+$/.test(declared) && Number(declared) <= MAX_BODY_BYTES && secretMatches(headers[SECRET_HEADER] as string)
}

/** The server span's attributes, as the router's tracing middleware sets them. */
const SERVER_SPAN_ATTRIBUTES = { "http.request.method": "POST", "url.path": WEBHOOK_PATH, "http.route": WEBHOOK_PATH }

/** What the direct route needs besides the secret check. */
interface DirectStore {
  readonly storeUnsafe: InboxShape["storeUnsafe"]
  readonly spans: PlainSpans
  /** Counts a new update (the router's route does it with `Metric.update`). */
  readonly countReceived: (stored: number) => void
}

/**
 * The direct route: reads the body (Node's parser stops at `Content-Length`),
 * parses it, and stores the update with `Inbox.storeUnsafe`, answering when
 * it is committed: no fiber and no Effect per request, the same spans as the
 * router's route. A client that goes away before its body arrived is
 * dropped; one that goes away while its update is being stored does not
 * stop the store. On shutdown the inbox fails what it still holds, which is
 * answered 503 (Telegram retries).
 */
const makeDirectHandler =
  (secretMatches: (given: string | undefined) => boolean, direct: DirectStore): DirectHandler =>
  (request, response) => {
    if (!isPlain(request, secretMatches)) return false
    const chunks: Array<Buffer> = []
    request.on("data", (chunk: Buffer) => chunks.push(chunk))
    request.on("end", () => {
      const update = parseUpdate(chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks))
      if (Option.isNone(update)) return send(response, NOT_AN_UPDATE)
      const server = direct.spans.start("http.server POST", { kind: "server", attributes: SERVER_SPAN_ATTRIBUTES })
      const handle = direct.spans.start("TelegramWebhook.handle", {
        parent: server,
        attributes: { update_id: update.value.update_id }
      })
      direct.storeUnsafe(update.value, (exit) => {
        const replied = Exit.isSuccess(exit) ? (exit.value === 0 ? DUPLICATE : STORED) : UNAVAILABLE
        if (Exit.isSuccess(exit)) direct.countReceived(exit.value)
        send(response, replied)
        direct.spans.end(handle, exit)
        direct.spans.end(server, exit)
      }, handle)
    })
    return true
  }

/**
 * The `POST /telegram/webhook` route, with the configured secret: the
 * router's route, and the direct one for plain requests (see the module doc).
 * Direct requests run in fibers of this layer's scope, with its services.
 */
export const WebhookRoute = Layer.unwrap(Effect.gen(function*() {
  const config = yield* AppConfig
  const secretMatches = makeSecretCheck(config.telegramWebhookSecret)
  const inbox = yield* Inbox
  const context = yield* Effect.context<never>()
  const direct: DirectStore = {
    storeUnsafe: inbox.storeUnsafe,
    spans: yield* plainSpans,
    countReceived: (stored) => receivedByWebhook.updateUnsafe(stored, context)
  }
  yield* (yield* DirectRoutes).add("POST", WEBHOOK_PATH, makeDirectHandler(secretMatches, direct))
  return HttpRouter.add("POST", WEBHOOK_PATH, handleWebhook(secretMatches))
}))
