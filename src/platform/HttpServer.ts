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
 *
 * Every instance is public (Render routes traffic to all of them), so the
 * server bounds what a slow or greedy client can hold: see `SERVER_LIMITS`.
 *
 * Direct routes (`DirectRoutes`): a route layer may also claim a path to be
 * answered straight from Node's `request` event, before Effect's router sees
 * the request. That is for the one hot path (Telegram's webhook), where the
 * router's per-request work (request object, middleware, response
 * conversion) was most of an acknowledgement's CPU time. A direct handler may
 * decline a request (return `false`), which then goes to the router as usual:
 * it answers only the common case and leaves the rare ones (oversized or
 * chunked bodies, …) to the full route. Gotcha: a direct handler writes the
 * Node response itself and must always end it.
 */
import * as NodeHttpServer from "@effect/platform-node/NodeHttpServer"
import { Context, Effect, Layer } from "effect"
import { HttpRouter } from "effect/http"
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http"
import { AppConfig } from "./AppConfig.ts"

/** What the Node server allows one client, and all of them together. */
export interface ServerLimits {
  /** The request line and headers must arrive within this (slowloris). */
  readonly headersTimeoutMs: number
  /**
   * The whole request, body included, must arrive within this. It bounds
   * receiving only: a handler that takes longer to answer is not cut off.
   */
  readonly requestTimeoutMs: number
  /** Open connections at most; more are closed as soon as they are accepted. */
  readonly maxConnections: number
  /**
   * An idle keep-alive connection is kept this long: longer than the 60 s
   * Render's proxy keeps its side open, so the proxy never reuses a
   * connection we are just closing.
   */
  readonly keepAliveTimeoutMs: number
  /** How often Node checks the two request timeouts; their precision. */
  readonly connectionsCheckingIntervalMs: number
}

/**
 * The limits in production. 10 s for headers and 30 s for a request are
 * ample for Telegram (a webhook body is at most 1 MiB) and Kie (a few KiB)
 * and for Render's health checks and Prometheus; 1000 connections is far
 * above what Render's proxy opens to one instance (it reuses keep-alive
 * connections), yet bounds the sockets and memory a flood can take.
 */
export const SERVER_LIMITS: ServerLimits = {
  headersTimeoutMs: 10_000,
  requestTimeoutMs: 30_000,
  maxConnections: 1000,
  keepAliveTimeoutMs: 65_000,
  connectionsCheckingIntervalMs: 1_000
}

/** A Node HTTP server with `limits` (production's by default). */
export const makeNodeServer = (limits: ServerLimits = SERVER_LIMITS): Server => {
  const server = createServer({
    keepAliveTimeout: limits.keepAliveTimeoutMs,
    headersTimeout: limits.headersTimeoutMs,
    requestTimeout: limits.requestTimeoutMs,
    connectionsCheckingInterval: limits.connectionsCheckingIntervalMs
  })
  server.maxConnections = limits.maxConnections
  return server
}

/**
 * Once `begin` is called, every response (in flight or still to come on an
 * open connection) is sent with `Connection: close` and its socket closed
 * after it; connections idle at that moment are closed at once. `track` must
 * see every request's response (`routeDirectly` calls it).
 */
const closeConnectionsWhenIdle = (server: Server) => {
  let closing = false
  const inFlight = new Set<ServerResponse>()
  const closeAfter = (response: ServerResponse) => {
    if (!response.headersSent) response.shouldKeepAlive = false
    else response.once("finish", () => setImmediate(() => server.closeIdleConnections()))
  }
  return {
    track: (response: ServerResponse) => {
      if (closing) return closeAfter(response)
      inFlight.add(response)
      response.once("close", () => inFlight.delete(response))
    },
    begin: () => {
      closing = true
      for (const response of inFlight) closeAfter(response)
      inFlight.clear()
      server.closeIdleConnections()
    }
  }
}

/**
 * Answers a request straight from Node's `request` event, or returns `false`
 * to leave it to the router (then it must not have touched the request or
 * the response).
 */
export type DirectHandler = (request: IncomingMessage, response: ServerResponse) => boolean

/**
 * Where a route layer registers a `DirectHandler` for one method and path
 * (the query string is ignored, as the router does). Provided to the route
 * layers by `layer` and by the tests' server.
 */
export class DirectRoutes extends Context.Service<DirectRoutes, {
  readonly add: (method: string, path: string, handler: DirectHandler) => Effect.Effect<void>
}>()("zimage-bot/DirectRoutes") {}

const routeKey = (method: string | undefined, url: string | undefined): string => {
  const path = url ?? ""
  const query = path.indexOf("?")
  return `${method} ${query === -1 ? path : path.slice(0, query)}`
}

/**
 * Makes `server` offer every request to the direct handlers registered
 * through the returned service before its other `request` listeners (Effect's
 * router) see it; `onRequest` sees every request first, handled directly or
 * not.
 */
export const routeDirectly = (
  server: Server,
  onRequest: (response: ServerResponse) => void = () => undefined
): DirectRoutes["Service"] => {
  const handlers = new Map<string, DirectHandler>()
  const emit = server.emit.bind(server) as (event: string | symbol, ...args: Array<unknown>) => boolean
  server.emit = ((event: string | symbol, ...args: Array<unknown>) => {
    if (event !== "request") return emit(event, ...args)
    const request = args[0] as IncomingMessage
    const response = args[1] as ServerResponse
    onRequest(response)
    const handler = handlers.size === 0 ? undefined : handlers.get(routeKey(request.method, request.url))
    if (handler !== undefined && handler(request, response)) return true
    return emit(event, ...args)
  }) as Server["emit"]
  return {
    add: (method, path, handler) => Effect.sync(() => void handlers.set(routeKey(method, path), handler))
  }
}

/**
 * Serves `routes` on HOST:PORT with `limits` (production's by default; tests
 * pass small ones). The route layers may register direct routes (`DirectRoutes`).
 */
export const layer = <E, R>(routes: Layer.Layer<never, E, R>, limits: ServerLimits = SERVER_LIMITS) =>
  Layer.unwrap(Effect.gen(function*() {
    const config = yield* AppConfig
    // Added before the server is built, so it runs once the server has closed.
    yield* Effect.addFinalizer(() => Effect.logInfo("[HTTP] server closed"))
    const server = makeNodeServer(limits)
    const connections = closeConnectionsWhenIdle(server)
    const direct = routeDirectly(server, connections.track)
    const serve = HttpRouter.serve(routes.pipe(Layer.provide(Layer.succeed(DirectRoutes, direct))), {
      disableLogger: true
    }).pipe(
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
