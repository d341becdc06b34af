/**
 * zimage-bot: composes the service's layers and launches them.
 */
import { Layer } from "effect"
import * as Database from "./Database.ts"
import { Health, HealthRoute } from "./Health.ts"
import * as HttpServer from "./HttpServer.ts"
import { Kie } from "./Kie.ts"
import { KieCallbackRoute, KieCallbacks } from "./KieCallback.ts"
import { KieRateBudget } from "./KieRateBudget.ts"
import { launch } from "./Launcher.ts"
import { migrations } from "./Migrations.ts"

const Routes = Layer.mergeAll(HealthRoute, KieCallbackRoute)

const KieLive = Kie.layer.pipe(Layer.provideMerge(KieCallbacks.layer), Layer.provideMerge(KieRateBudget.layer))

const AppLive = HttpServer.layer(Routes).pipe(
  Layer.provideMerge(KieLive),
  Layer.provideMerge(Health.layer),
  Layer.provideMerge(Database.layer(migrations))
)

launch(AppLive)
