/**
 * Everything that runs only on the ACTIVE instance for the update pipeline,
 * as one layer for LeaderLock to build in each leadership scope:
 *
 * - `Dispatcher.layer`: dispatcher + WORKERS workers;
 * - `Reconciler.layer`: stuck and orphaned updates, retention;
 * - `Retention.layer`: old finished generations and chat sessions deleted;
 * - `Poller.layer` when PUBLIC_URL is unset (long polling), otherwise
 *   `WebhookSetup.layer` (setWebhook on becoming ACTIVE);
 * - a fresh `LeaderTerm` per build.
 *
 * Close the scope with `Exit.void` for a graceful release (drain) and with an
 * interrupt or failure when leadership was lost (stop at once).
 */
import { Effect, Layer, Option } from "effect"
import { AppConfig } from "./platform/AppConfig.ts"
import * as Dispatcher from "./dispatch/Dispatcher.ts"
import { LeaderTerm } from "./leadership/LeaderTerm.ts"
import * as Poller from "./intake/Poller.ts"
import * as Reconciler from "./inbox/Reconciler.ts"
import * as Retention from "./chat/Retention.ts"
import * as WebhookSetup from "./intake/WebhookSetup.ts"

/** Long polling or setWebhook, by PUBLIC_URL. */
export const intakeLayer = Layer.unwrap(Effect.gen(function*() {
  const config = yield* AppConfig
  return Option.isSome(config.publicUrl) ? WebhookSetup.layer : Poller.layer
}))

/**
 * Needs AppConfig, Inbox, Telegram, Generations, PgClient (LISTEN) and
 * UpdateHandler (the chat flow); provides nothing, runs fibers in the scope it is built in.
 */
export const layer = Layer.mergeAll(Dispatcher.layer, Reconciler.layer, Retention.layer, intakeLayer).pipe(
  Layer.provide(LeaderTerm.layer)
)
