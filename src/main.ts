/**
 * zimage-bot: composes the service's layers and launches them.
 */
import { Layer } from "effect"
import * as Database from "./Database.ts"
import { Health, HealthRoute } from "./Health.ts"
import * as HttpServer from "./HttpServer.ts"
import { launch } from "./Launcher.ts"
import { migrations } from "./Migrations.ts"

const Routes = Layer.mergeAll(HealthRoute)

const AppLive = HttpServer.layer(Routes).pipe(
  Layer.provideMerge(Health.layer),
  Layer.provideMerge(Database.layer(migrations))
)

launch(AppLive)
