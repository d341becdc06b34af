/**
 * The HTTP server on PORT, serving the route layers it is given. The
 * `HttpServer` service stays visible to the layers around it (its bound
 * address, e.g. with PORT=0 in tests).
 *
 * On shutdown it stops accepting connections and lets requests in flight
 * finish for up to SHUTDOWN_TIMEOUT_MS (a webhook answers only after its
 * update is committed; cutting it short makes Telegram send it again), then
 * interrupts the rest. Keep-alive connections (Render's proxy keeps them open)
 * are closed as soon as they are idle: Node's `server.close()` closes only
 * those idle at that moment, so a connection whose request was in flight
 * would otherwise stay open until `keepAliveTimeout` and hold the shutdown
 * for the whole SHUTDOWN_TIMEOUT_MS.
 */
import * as NodeHttpServer from "@effect/platform-node/NodeHttpServer"
import { Effect, Layer } from "effect"
import { HttpRouter } from "effect/http"
import { createServer, type Server, type ServerResponse } from "node:http"
import { AppConfig } from "./AppConfig.ts"

/**
 * Once `begin` is called, every response (in flight or still to come on an
 * open connection) is sent with `Connection: close` and its socket closed
 * after it; connections idle at that moment are closed at once.
 */
const closeConnectionsWhenIdle = (server: Server) => {
  let closing = false
  const inFlight = new Set<ServerResponse>()
  const closeAfter = (response: ServerResponse) => {
    if (!response.headersSent) response.shouldKeepAlive = false
    else response.once("finish", () => setImmediate(() => server.closeIdleConnections()))
  }
  server.on("request", (_request, response: ServerResponse) => {
    if (closing) return closeAfter(response)
    inFlight.add(response)
    response.once("close", () => inFlight.delete(response))
  })
  return {
    begin: () => {
      closing = true
      for (const response of inFlight) closeAfter(response)
      inFlight.clear()
      server.closeIdleConnections()
    }
  }
}

export const layer = <E, R>(routes: Layer.Layer<never, E, R>) =>
  Layer.unwrap(Effect.gen(function*() {
    const config = yield* AppConfig
    // Added before the server is built, so it runs once the server has closed.
    yield* Effect.addFinalizer(() => Effect.logInfo("[HTTP] server closed"))
    const server = createServer({ keepAliveTimeout: 65_000 })
    const connections = closeConnectionsWhenIdle(server)
    const serve = HttpRouter.serve(routes, { disableLogger: true }).pipe(
      Layer.provideMerge(NodeHttpServer.layer(() => server, {
        port: config.port,
        host: config.httpHost,
        gracefulShutdownTimeout: config.shutdownTimeout
      }))
    )
    // Released before `serve`, whose release calls `server.close()` and waits.
    const closeKeepAlive = Layer.effectDiscard(Effect.addFinalizer(() => Effect.sync(connections.begin)))
    return closeKeepAlive.pipe(Layer.provideMerge(serve))
  }))
