/**
 * The HTTP server on PORT, serving the route layers it is given. The
 * `HttpServer` service stays visible to the layers around it (its bound
 * address, e.g. with PORT=0 in tests).
 */
import { NodeHttpServer } from "@effect/platform-node"
import { Duration, Effect, Layer } from "effect"
import { HttpRouter } from "effect/http"
import { createServer } from "node:http"
import { AppConfig } from "./AppConfig.ts"

export const layer = <E, R>(routes: Layer.Layer<never, E, R>) =>
  HttpRouter.serve(routes, { disableLogger: true }).pipe(
    Layer.provideMerge(Layer.unwrap(Effect.gen(function*() {
      const config = yield* AppConfig
      return NodeHttpServer.layer(() => createServer({ keepAliveTimeout: 65_000 }), {
        port: config.port,
        host: config.httpHost,
        gracefulShutdownTimeout: Duration.seconds(10)
      })
    })))
  )
