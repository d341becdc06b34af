/**
 * The limits of the production HTTP server (`src/platform/HttpServer.ts`)
 * against slow and greedy clients, over raw TCP on loopback. Node enforces
 * them on its own timers, so these tests use small limits and real time (a
 * few hundred milliseconds), waiting for the server's reaction, not sleeping.
 */
import { assert, describe, it } from "@effect/vitest"
import { Effect, Layer } from "effect"
import { HttpRouter, HttpServerRequest, HttpServerResponse } from "effect/http"
import { connect, type Socket } from "node:net"
import * as HttpServer from "../src/platform/HttpServer.ts"
import { TestConfigLive } from "./support/TestConfig.ts"
import { serverUrl } from "./support/TestHttpServer.ts"

const SMALL: HttpServer.ServerLimits = {
  headersTimeoutMs: 300,
  requestTimeoutMs: 400,
  maxConnections: 2,
  keepAliveTimeoutMs: 5_000,
  connectionsCheckingIntervalMs: 50
}

const Routes = Layer.mergeAll(
  HttpRouter.add("GET", "/ok", Effect.succeed(HttpServerResponse.text("ok"))),
  // Answers only after 800 ms: longer than the request timeout.
  HttpRouter.add(
    "GET",
    "/slow",
    Effect.promise(() => new Promise((resolve) => setTimeout(resolve, 800))).pipe(
      Effect.as(HttpServerResponse.text("slow"))
    )
  ),
  HttpRouter.add(
    "POST",
    "/echo",
    Effect.flatMap(HttpServerRequest.HttpServerRequest, (request) => request.text).pipe(
      Effect.map((text) => HttpServerResponse.text(text)),
      Effect.orDie
    )
  )
)

const ServerLive = (limits: HttpServer.ServerLimits) =>
  HttpServer.layer(Routes, limits).pipe(Layer.provide(TestConfigLive()))

/** POST /echo also has a direct route; it declines requests with `x-decline`, which the router then answers. */
const DirectEcho = Layer.effectDiscard(Effect.gen(function*() {
  const direct = yield* HttpServer.DirectRoutes
  yield* direct.add("POST", "/echo", (request, response) => {
    if (request.headers["x-decline"] !== undefined) return false
    request.resume()
    request.on("end", () => response.writeHead(200, { "content-type": "text/plain" }).end("direct"))
    return true
  })
}))

/** A raw client connection: what it received so far, and whether the server closed it. */
interface RawClient {
  readonly socket: Socket
  readonly received: () => string
  readonly closed: () => boolean
  /** Resolves once `done` holds for what was received (or the socket closed); rejects after `timeoutMs`. */
  readonly awaitUntil: (done: (text: string, closed: boolean) => boolean, timeoutMs?: number) => Effect.Effect<void>
}

const rawClient = (port: number) =>
  Effect.promise(() =>
    new Promise<RawClient>((resolve) => {
      let text = ""
      let isClosed = false
      const listeners = new Set<() => void>()
      const socket = connect(port, "127.0.0.1", () =>
        resolve({
          socket,
          received: () => text,
          closed: () => isClosed,
          awaitUntil: (done, timeoutMs = 3_000) =>
            Effect.promise(() =>
              new Promise<void>((ok, fail) => {
                const check = () => {
                  if (!done(text, isClosed)) return
                  listeners.delete(check)
                  clearTimeout(timer)
                  ok()
                }
                const timer = setTimeout(() => {
                  listeners.delete(check)
                  fail(new Error(`not within ${timeoutMs} ms; received ${JSON.stringify(text)}, closed ${isClosed}`))
                }, timeoutMs)
                listeners.add(check)
                check()
              })
            )
        }))
      const changed = () => listeners.forEach((listener) => listener())
      socket.on("data", (chunk) => {
        text += chunk.toString("latin1")
        changed()
      })
      socket.on("error", () => undefined)
      socket.on("close", () => {
        isClosed = true
        changed()
      })
    })
  )

const portOf = Effect.map(serverUrl, (url) => Number(new URL(url).port))

const GET_OK = "GET /ok HTTP/1.1\r\nHost: test\r\n\r\n"
const responses = (text: string) => text.split("HTTP/1.1 ").length - 1

describe("direct routes", () => {
  const Live = HttpServer.layer(Layer.mergeAll(Routes, DirectEcho)).pipe(Layer.provide(TestConfigLive()))
  const call = (url: string, init: RequestInit) =>
    Effect.promise(() => fetch(url, init).then(async (response) => `${response.status} ${await response.text()}`))

  it.live("answer their method and path (query ignored); what they decline or do not claim goes to the router", () =>
    Effect.gen(function*() {
      const url = yield* serverUrl
      assert.strictEqual(yield* call(`${url}/echo`, { method: "POST", body: "x" }), "200 direct")
      assert.strictEqual(yield* call(`${url}/echo?a=1`, { method: "POST", body: "x" }), "200 direct")
      assert.strictEqual(
        yield* call(`${url}/echo`, { method: "POST", body: "routed", headers: { "x-decline": "1" } }),
        "200 routed"
      )
      assert.strictEqual(yield* call(`${url}/ok`, { method: "GET" }), "200 ok")
      assert.match(yield* call(`${url}/echo`, { method: "GET" }), /^404 /)
    }).pipe(Effect.provide(Live)))
})

describe("the HTTP server's limits", () => {
  it("production: 10 s for headers, 30 s for a request, 1000 connections, keep-alive above Render's 60 s", () => {
    const server = HttpServer.makeNodeServer()
    assert.strictEqual(server.headersTimeout, 10_000)
    assert.strictEqual(server.requestTimeout, 30_000)
    assert.strictEqual(server.maxConnections, 1000)
    assert.strictEqual(server.keepAliveTimeout, 65_000)
    assert.isBelow(server.headersTimeout, server.requestTimeout)
  })

  it.live("headers that do not arrive in time: 408 and the connection closed", () =>
    Effect.gen(function*() {
      const client = yield* rawClient(yield* portOf)
      client.socket.write("GET /ok HTTP/1.1\r\nHost: test\r\n")
      yield* client.awaitUntil((_, closed) => closed)
      assert.match(client.received(), /^HTTP\/1\.1 408 /)
    }).pipe(Effect.provide(ServerLive(SMALL))))

  it.live("a body that does not arrive in time: 408 and the connection closed", () =>
    Effect.gen(function*() {
      const client = yield* rawClient(yield* portOf)
      client.socket.write("POST /echo HTTP/1.1\r\nHost: test\r\nContent-Length: 10\r\n\r\nabc")
      yield* client.awaitUntil((_, closed) => closed)
      assert.match(client.received(), /^HTTP\/1\.1 408 /)
    }).pipe(Effect.provide(ServerLive(SMALL))))

  it.live("the request timeout bounds receiving only: a slow answer is not cut off", () =>
    Effect.gen(function*() {
      const client = yield* rawClient(yield* portOf)
      client.socket.write("GET /slow HTTP/1.1\r\nHost: test\r\n\r\n")
      yield* client.awaitUntil((text) => text.endsWith("slow"))
      assert.match(client.received(), /^HTTP\/1\.1 200 /)
      assert.isFalse(client.closed())
    }).pipe(Effect.provide(ServerLive(SMALL))))

  it.live("an idle keep-alive connection outlives the headers timeout and serves the next request", () =>
    Effect.gen(function*() {
      const client = yield* rawClient(yield* portOf)
      client.socket.write(GET_OK)
      yield* client.awaitUntil((text) => responses(text) === 1 && text.endsWith("ok"))
      // Idle for twice the headers timeout, as a proxy's pooled connection is.
      const stayedOpen = yield* Effect.promise(() =>
        new Promise<boolean>((resolve) => {
          const timer = setTimeout(() => resolve(true), 2 * SMALL.headersTimeoutMs)
          client.socket.once("close", () => {
            clearTimeout(timer)
            resolve(false)
          })
        })
      )
      assert.isTrue(stayedOpen, "the server did not close the idle connection")
      client.socket.write(GET_OK)
      yield* client.awaitUntil((text) => responses(text) === 2 && text.endsWith("ok"))
    }).pipe(Effect.provide(ServerLive(SMALL))))

  it.live("connections beyond maxConnections are closed at once; the others keep working", () =>
    Effect.gen(function*() {
      const port = yield* portOf
      const first = yield* rawClient(port)
      const second = yield* rawClient(port)
      first.socket.write(GET_OK)
      yield* first.awaitUntil((text) => text.endsWith("ok"))
      const third = yield* rawClient(port)
      third.socket.write(GET_OK)
      yield* third.awaitUntil((_, closed) => closed)
      assert.strictEqual(third.received(), "", "no answer, just closed")
      second.socket.write(GET_OK)
      yield* second.awaitUntil((text) => text.endsWith("ok"))
      assert.isFalse(first.closed() || second.closed())
      first.socket.destroy()
      second.socket.destroy()
    }).pipe(Effect.provide(ServerLive(SMALL))))
})
