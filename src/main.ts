/**
 * zimage-bot: composes the service's layers and launches them.
 */
import { Layer } from "effect"
import * as Database from "./Database.ts"
import { Health, HealthRoute } from "./Health.ts"
import * as HttpServer from "./HttpServer.ts"
import { launch } from "./Launcher.ts"
import * as LeaderLock from "./LeaderLock.ts"
import { migrations } from "./Migrations.ts"

const Routes = Layer.mergeAll(HealthRoute)

/** Services that run only on the ACTIVE instance, inside the leadership scope. */
const LeaderOnly = Layer.empty

// The HTTP server and the leader lock are siblings, so on SIGTERM they are
// released concurrently: the lock is handed over while the server drains.
const AppLive = Layer.mergeAll(HttpServer.layer(Routes), LeaderLock.layer(LeaderOnly)).pipe(
  Layer.provideMerge(Health.layer),
  Layer.provideMerge(Database.layer(migrations))
)

launch(AppLive)
