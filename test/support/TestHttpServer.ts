/**
 * Serves route layers on 127.0.0.1 with an OS-assigned port, the way
 * `src/platform/HttpServer.ts` does in production (same Node server options,
 * direct routes offered before the router), and exposes the base URL for
 * requests over real loopback HTTP.
 */
import { NodeHttpServer } from "@effect/platform-node"
import { Effect, Layer } from "effect"
import { HttpRouter, HttpServer } from "effect/http"
import { isInetAddress } from "effect/net/NetAddress"
import { DirectRoutes, makeNodeServer, routeDirectly } from "../../src/platform/HttpServer.ts"

export const TestHttpServerLive = <E, R>(routes: Layer.Layer<never, E, R>) =>
  Layer.unwrap(Effect.sync(() => {
    const server = makeNodeServer()
    const direct = Layer.succeed(DirectRoutes, routeDirectly(server))
    return HttpRouter.serve(routes.pipe(Layer.provide(direct)), { disableLogger: true, disableListenLog: true })
      .pipe(Layer.provideMerge(NodeHttpServer.layer(() => server, { port: 0, host: "127.0.0.1" })))
  }))

/** `http://127.0.0.1:<port>` of the server built by `TestHttpServerLive`. */
export const serverUrl = Effect.gen(function*() {
  const server = yield* HttpServer.HttpServer
  const address = server.address
  if (!isInetAddress(address)) return yield* Effect.die(new Error("the test server is not on TCP"))
  return `http://127.0.0.1:${address.port}`
})
