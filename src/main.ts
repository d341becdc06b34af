/**
 * zimage-bot: composes the service's layers and launches them.
 */
import { Layer } from "effect"
import * as Database from "./Database.ts"
import { Health, HealthRoute } from "./Health.ts"
import * as HttpServer from "./HttpServer.ts"
import { Inbox } from "./Inbox.ts"
import { Kie } from "./Kie.ts"
import { KieCallbackRoute, KieCallbacks } from "./KieCallback.ts"
import { KieRateBudget } from "./KieRateBudget.ts"
import { launch } from "./Launcher.ts"
import * as LeaderLock from "./LeaderLock.ts"
import { MetricsRefresh, MetricsRoute } from "./Metrics.ts"
import { migrations } from "./Migrations.ts"
import { Telegram } from "./Telegram.ts"
import { WebhookRoute } from "./TelegramWebhook.ts"

const Routes = Layer.mergeAll(HealthRoute, MetricsRoute, WebhookRoute, KieCallbackRoute)

const KieLive = Kie.layer.pipe(Layer.provideMerge(KieCallbacks.layer), Layer.provideMerge(KieRateBudget.layer))

/**
 * Services that run only on the ACTIVE instance, inside the leadership scope.
 * `LeaderServices.layer` (dispatcher + workers, polling or setWebhook, the
 * reconciler) joins once the chat flow provides its `UpdateHandler`.
 */
const LeaderOnly = Layer.empty

/**
 * Shutdown order (SIGTERM): layers are released in reverse dependency order.
 *
 * 1. The HTTP server and the leader lock are siblings, released concurrently:
 *    the server stops accepting connections and lets requests in flight
 *    finish (a webhook answers 200 only after its commit), while the lock
 *    closes the leadership scope with a success exit (the dispatcher stops
 *    claiming and drains, every leader-only service winds down within
 *    SHUTDOWN_TIMEOUT_MS, leaving generations to resume from their rows),
 *    then unlocks and announces the release so a standby takes over at once.
 *    Webhook requests do not need the lock, so they never hold up the handover.
 * 2. Then what both use: Kie, Telegram, the inbox, health and metrics.
 * 3. Last, the database: the pool closes (and an embedded server stops).
 * `Launcher` bounds the whole sequence with SHUTDOWN_DEADLINE_MS.
 */
const AppLive = Layer.mergeAll(HttpServer.layer(Routes), LeaderLock.layer(LeaderOnly)).pipe(
  Layer.provideMerge(KieLive),
  Layer.provideMerge(Layer.mergeAll(Inbox.layer, Telegram.layer)),
  Layer.provideMerge(Layer.mergeAll(Health.layer, MetricsRefresh.layer)),
  Layer.provideMerge(Database.layer(migrations))
)

launch(AppLive)
