/**
 * zimage-bot: launches the service (its layers are composed in `App.ts`).
 */
import { AppLive } from "./App.ts"
import { launch } from "./Launcher.ts"

launch(AppLive)
