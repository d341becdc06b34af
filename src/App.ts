/**
 * The whole service as one layer: what `main.ts` launches and what end-to-end
 * tests build in-process against fake Telegram and Kie servers.
 *
 * Data flows one way: webhook/poller → inbox → dispatcher → chat flow →
 * generations → generation engine → Telegram. Everything leader-only runs in
 * `LeaderLock`'s leadership scope; the rest runs on every instance.
 */
import { Layer } from "effect"
import * as BotCommands from "./chat/BotCommands.ts"
import { ChatFlowLive } from "./chat/ChatFlow.ts"
import { ChatSessions } from "./chat/ChatSessions.ts"
import * as Database from "./database/Database.ts"
import * as GenerationEngine from "./engine/GenerationEngine.ts"
import { Generations } from "./generations/Generations.ts"
import * as GenerationsHealth from "./generations/GenerationsHealth.ts"
import { Health, HealthRoute } from "./observability/Health.ts"
import * as HttpServer from "./platform/HttpServer.ts"
import { Inbox } from "./inbox/Inbox.ts"
import { Kie } from "./kie/Kie.ts"
import { KieCallbackRoute, KieCallbacks } from "./kie/KieCallback.ts"
import { KieRateBudget } from "./kie/KieRateBudget.ts"
import * as LeaderLock from "./leadership/LeaderLock.ts"
import * as LeaderServices from "./LeaderServices.ts"
import { MetricsRefresh, MetricsRoute } from "./observability/Metrics.ts"
import { migrations } from "./Migrations.ts"
import { Telegram } from "./telegram/Telegram.ts"
import { WebhookRoute } from "./intake/TelegramWebhook.ts"

const Routes = Layer.mergeAll(HealthRoute, MetricsRoute, WebhookRoute, KieCallbackRoute)

const KieLive = Kie.layer.pipe(Layer.provideMerge(KieCallbacks.layer), Layer.provideMerge(KieRateBudget.layer))

/** Services that run only on the ACTIVE instance, inside the leadership scope. */
const LeaderOnly = Layer.mergeAll(
  LeaderServices.layer,
  BotCommands.layer,
  GenerationEngine.layerWithDownloads
).pipe(Layer.provide(ChatFlowLive))

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
 * 2. Then what both use: Kie, Telegram, the inbox, generations, health, metrics.
 * 3. Last, the database: the pool closes (and an embedded server stops).
 * `Launcher` bounds the whole sequence with SHUTDOWN_DEADLINE_MS.
 */
export const AppLive = Layer.mergeAll(HttpServer.layer(Routes), LeaderLock.layer(LeaderOnly)).pipe(
  Layer.provideMerge(KieLive),
  // On every instance: /health counts generations; the engine reports its state into it.
  Layer.provideMerge(GenerationsHealth.layer),
  Layer.provideMerge(Layer.mergeAll(Inbox.layer, Telegram.layer, ChatSessions.layer, Generations.layer)),
  Layer.provideMerge(Layer.mergeAll(Health.layer, MetricsRefresh.layer)),
  Layer.provideMerge(Database.layer(migrations))
)
