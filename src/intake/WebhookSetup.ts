/**
 * Webhook mode (PUBLIC_URL set), ACTIVE only: on becoming ACTIVE, make sure
 * Telegram's webhook is `PUBLIC_URL/telegram/webhook` with our secret token,
 * `allowed_updates` message and callback_query, and `WEBHOOK_MAX_CONNECTIONS`.
 * `Telegram.ensureWebhook` reads getWebhookInfo first and calls setWebhook
 * only when something differs (including a rotated secret), never dropping
 * pending updates. Failures are retried with `webhookSetupPolicy`.
 */
import { Effect, Layer, Option } from "effect"
import { AppConfig } from "../platform/AppConfig.ts"
import { makeProblemLog } from "../platform/ProblemLog.ts"
import { Telegram, type TelegramError } from "../telegram/Telegram.ts"
import { allowedUpdates } from "../telegram/TelegramUpdate.ts"
import { WEBHOOK_PATH } from "./TelegramWebhook.ts"
import { backoff } from "../platform/Retry.ts"

/**
 * Telegram's default. Each connection is one POST that only stores a row,
 * so 40 parallel deliveries are far below what one instance absorbs.
 */
export const WEBHOOK_MAX_CONNECTIONS = 40

/** Retry setWebhook/getWebhookInfo failures: soon at first, then every minute. */
export const webhookSetupPolicy = backoff("2 seconds", "60 seconds")

/** Makes sure the webhook is ours on becoming ACTIVE (a fiber of the term; retried until it is). */
export const layer: Layer.Layer<never, never, AppConfig | Telegram> = Layer.effectDiscard(
  Effect.gen(function*() {
    const config = yield* AppConfig
    const telegram = yield* Telegram
    if (Option.isNone(config.publicUrl) || Option.isNone(config.telegramWebhookSecret)) {
      return yield* Effect.logError("[WEBHOOK] not set up: PUBLIC_URL and TELEGRAM_WEBHOOK_SECRET are required")
    }
    const url = `${config.publicUrl.value}${WEBHOOK_PATH}`
    const problems = makeProblemLog()
    const ensure = telegram.ensureWebhook({
      url,
      secretToken: config.telegramWebhookSecret.value,
      allowedUpdates: [...allowedUpdates],
      maxConnections: WEBHOOK_MAX_CONNECTIONS
    }).pipe(
      Effect.tapError((error: TelegramError) =>
        problems.failing(`[WEBHOOK] could not set the webhook, retrying: ${error.message}`)
      ),
      Effect.retry(webhookSetupPolicy),
      Effect.tap((outcome) =>
        Effect.logInfo(
          outcome === "set"
            ? `[WEBHOOK] webhook set to ${url} (max_connections ${WEBHOOK_MAX_CONNECTIONS})`
            : `[WEBHOOK] webhook already set to ${url}`
        )
      ),
      Effect.withSpan("WebhookSetup.ensure")
    )
    yield* Effect.forkScoped(ensure)
  })
)
