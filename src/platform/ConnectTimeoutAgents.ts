/**
 * Keep-alive `node:http` and `node:https` agents whose new connections give
 * up connecting after a set time, for Effect's node:http-backed HTTP client
 * (`NodeHttpClient.HttpAgent`).
 *
 * When to use: for an outside API where "no connection was made" must be
 * told apart from "the request may have arrived" (Kie's createTask: only the
 * first may be retried without risking a second paid task). A connect that
 * does not finish in time fails with `CONNECT_TIMEOUT_CODE`, which means
 * nothing was sent.
 *
 * Details: the time covers TCP connect and, for https, the TLS handshake:
 * the request's bytes go out only after both. Connections are kept alive and
 * reused; Node closes an idle one before the server's advertised
 * `Keep-Alive: timeout` runs out.
 *
 * Gotchas: why not undici (Effect's other Node client, which has a connect
 * timeout of its own)? Loading the undici package costs about 14 MiB of RSS
 * in this service, more than the rest of the HTTP stack together
 * (docs/benchmarks.md, "Memory"). The agents are destroyed, with their
 * sockets, when the scope closes.
 */
import * as NodeHttpClient from "@effect/platform-node/NodeHttpClient"
import { Effect, Layer, type Scope } from "effect"
import * as http from "node:http"
import * as https from "node:https"
import type * as net from "node:net"

/** The `code` of the error a connection fails with when it does not connect in time. */
export const CONNECT_TIMEOUT_CODE = "ECONNECT_TIMEOUT"

/** Destroys `socket` with `CONNECT_TIMEOUT_CODE` unless `ready` fires within `ms`. */
const guardConnect = <S extends net.Socket>(socket: S, ms: number, ready: "connect" | "secureConnect"): S => {
  const timer = setTimeout(() => {
    const error = Object.assign(new Error(`no connection within ${ms} ms`), { code: CONNECT_TIMEOUT_CODE })
    socket.destroy(error)
  }, ms)
  const clear = () => clearTimeout(timer)
  socket.once(ready, clear)
  socket.once("close", clear)
  return socket
}

/** `agent`, its new connections guarded by `guardConnect` (`ready`: the event that makes one usable). */
const guarded = <A extends http.Agent>(agent: A, ms: number, ready: "connect" | "secureConnect"): A => {
  const create = agent.createConnection.bind(agent) as (...args: Array<unknown>) => net.Socket
  agent.createConnection =
    ((...args: Array<unknown>) => guardConnect(create(...args), ms, ready)) as A["createConnection"]
  return agent
}

/** Both agents, destroyed (with their sockets) when the scope closes. */
export const make = (
  connectTimeoutMs: number
): Effect.Effect<NodeHttpClient.HttpAgent["Service"], never, Scope.Scope> =>
  Effect.acquireRelease(
    Effect.sync(() => ({
      http: guarded(new http.Agent({ keepAlive: true }), connectTimeoutMs, "connect"),
      https: guarded(new https.Agent({ keepAlive: true }), connectTimeoutMs, "secureConnect")
    })),
    (agents) =>
      Effect.sync(() => {
        agents.http.destroy()
        agents.https.destroy()
      })
  )

/** Effect's node:http client on agents with this connect timeout. */
export const httpClientLayer = (connectTimeoutMs: number) =>
  NodeHttpClient.layerNodeHttpNoAgent.pipe(
    Layer.provide(Layer.effect(NodeHttpClient.HttpAgent, make(connectTimeoutMs)))
  )
