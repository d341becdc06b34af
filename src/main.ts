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
import { migrations } from "./Migrations.ts"
import { Telegram } from "./Telegram.ts"
import { WebhookRoute } from "./TelegramWebhook.ts"

const Routes = Layer.mergeAll(HealthRoute, WebhookRoute, KieCallbackRoute)

const KieLive = Kie.layer.pipe(Layer.provideMerge(KieCallbacks.layer), Layer.provideMerge(KieRateBudget.layer))

// Leader-only work (dispatcher + workers, long polling or setWebhook, the
// reconciler) is `LeaderServices.layer` in src/LeaderServices.ts; it needs an
// `UpdateHandler` (the chat flow) and runs inside LeaderLock's scope.
const AppLive = HttpServer.layer(Routes).pipe(
  Layer.provideMerge(KieLive),
  Layer.provideMerge(Layer.mergeAll(Inbox.layer, Telegram.layer)),
  Layer.provideMerge(Health.layer),
  Layer.provideMerge(Database.layer(migrations))
)

launch(AppLive)
