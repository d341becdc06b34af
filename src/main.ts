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
import { migrations } from "./Migrations.ts"
import { Telegram } from "./Telegram.ts"
import { WebhookRoute } from "./TelegramWebhook.ts"

const Routes = Layer.mergeAll(HealthRoute, WebhookRoute, KieCallbackRoute)

const KieLive = Kie.layer.pipe(Layer.provideMerge(KieCallbacks.layer), Layer.provideMerge(KieRateBudget.layer))

/**
 * Services that run only on the ACTIVE instance, inside the leadership scope.
 * `LeaderServices.layer` (dispatcher + workers, polling or setWebhook, the
 * reconciler) joins once the chat flow provides its `UpdateHandler`.
 */
const LeaderOnly = Layer.empty

// The HTTP server and the leader lock are siblings, so on SIGTERM they are
// released concurrently: the lock is handed over while the server drains.
const AppLive = Layer.mergeAll(HttpServer.layer(Routes), LeaderLock.layer(LeaderOnly)).pipe(
  Layer.provideMerge(KieLive),
  Layer.provideMerge(Layer.mergeAll(Inbox.layer, Telegram.layer)),
  Layer.provideMerge(Health.layer),
  Layer.provideMerge(Database.layer(migrations))
)

launch(AppLive)
