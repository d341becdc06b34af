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
 */
import { ByteSize, Effect, Layer, Metric, Option, Redacted, Schema } from "effect"
import { HttpIncomingMessage, HttpRouter, HttpServerRequest, HttpServerResponse } from "effect/http"
import { createHash, timingSafeEqual } from "node:crypto"
import { AppConfig } from "../platform/AppConfig.ts"
import { Inbox } from "../inbox/Inbox.ts"
import * as Metrics from "../observability/Metrics.ts"
import { safeJson } from "../telegram/SafeJson.ts"
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

const answer = (status: number, body: Record<string, unknown>) =>
  HttpServerResponse.jsonUnsafe(body, { status, headers: { "cache-control": "no-store" } })

const decodeEnvelope = Schema.decodeUnknownOption(UpdateEnvelope)

/** New updates stored from webhooks (duplicates are not counted). */
const receivedByWebhook = Metric.withAttributes(Metrics.updatesReceived, { source: "webhook" })

/** The body as JSON that `jsonb` can store (NUL and lone surrogates replaced), if it is JSON. */
const parseJson = (bytes: ArrayBuffer): Option.Option<unknown> => {
  try {
    return Option.some(safeJson(JSON.parse(new TextDecoder("utf-8", { fatal: true }).decode(bytes))))
  } catch {
    return Option.none()
  }
}

const handleWebhook = (secretMatches: (given: string | undefined) => boolean) =>
  Effect.gen(function*() {
    const request = yield* HttpServerRequest.HttpServerRequest
    if (!secretMatches(request.headers[SECRET_HEADER])) {
      return answer(401, { ok: false, error: "unauthorized" })
    }
    const declared = request.headers["content-length"]
    if (declared !== undefined && /^\d+$/.test(declared) && Number(declared) > MAX_BODY_BYTES) {
      return answer(413, { ok: false, error: "payload too large (limit 1 MiB)" })
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
    if (body._tag === "TooLarge") return answer(413, { ok: false, error: "payload too large (limit 1 MiB)" })
    if (body._tag === "Unreadable") return answer(400, { ok: false, error: "unreadable body" })
    const update = Option.flatMap(parseJson(body.bytes), decodeEnvelope)
    if (Option.isNone(update)) {
      return answer(400, { ok: false, error: "expected a JSON object with an integer update_id" })
    }
    // The update's trace starts here: Inbox.store, Inbox.claim, Dispatcher.handlerRun, Inbox.complete.
    yield* Effect.annotateCurrentSpan("update_id", update.value.update_id)
    const inbox = yield* Inbox
    return yield* inbox.store([update.value]).pipe(
      Effect.tap((stored) => Metric.update(receivedByWebhook, stored)),
      Effect.map((stored) => answer(200, { ok: true, duplicate: stored === 0 })),
      // The inbox logs the outage once; each refused update is only worth a debug line.
      Effect.catchTag(
        "InboxUnavailable",
        (error) =>
          Effect.logDebug(`[WEBHOOK] update ${update.value.update_id} not stored, answering 503: ${error.message}`)
            .pipe(
              Effect.as(answer(503, { ok: false, error: "temporarily unavailable, retry later" }))
            )
      )
    )
  }).pipe(Effect.withSpan("TelegramWebhook.handle"))

/** The `POST /telegram/webhook` route, with the configured secret. */
export const WebhookRoute = Layer.unwrap(Effect.gen(function*() {
  const config = yield* AppConfig
  return HttpRouter.add("POST", WEBHOOK_PATH, handleWebhook(makeSecretCheck(config.telegramWebhookSecret)))
}))
