/**
 * The connect-timeout agents behind the Kie client, on real loopback sockets:
 * a connection that never gets ready fails with `CONNECT_TIMEOUT_CODE` (so
 * the request cannot have been sent), one that connected is not cut by the
 * guard however long its answer takes, and sequential requests share one
 * kept-alive connection.
 *
 * The guard is a real timer on a real socket (TestClock does not reach
 * Node's sockets), so the connect timeout here is 50 ms of real time, and
 * one test lets 150 ms pass on purpose: past the guard's deadline, to show a
 * connected request is not cut by it.
 */
import { assert, describe, it } from "@effect/vitest"
import { Effect, Exit, Fiber, Layer } from "effect"
import { HttpClient } from "effect/http"
import * as http from "node:http"
import * as net from "node:net"
import { CONNECT_TIMEOUT_CODE, httpClientLayer } from "../src/platform/ConnectTimeoutAgents.ts"

const CONNECT_TIMEOUT_MS = 50

/** Starts `server` on 127.0.0.1 (its port); closes it and destroys its connections when the scope closes. */
const listen = (server: net.Server) => {
  const sockets = new Set<net.Socket>()
  server.on("connection", (socket: net.Socket) => {
    sockets.add(socket)
    socket.once("close", () => sockets.delete(socket))
  })
  return Effect.acquireRelease(
    Effect.callback<number>((resume) => {
      server.listen(0, "127.0.0.1", () => resume(Effect.succeed((server.address() as net.AddressInfo).port)))
    }),
    () =>
      Effect.callback<void>((resume) => {
        for (const socket of sockets) socket.destroy()
        server.close(() => resume(Effect.void))
      })
  )
}

/** A port nobody listens on: taken, then given back. */
const freePort = Effect.callback<number>((resume) => {
  const probe = net.createServer().listen(0, "127.0.0.1", () => {
    const port = (probe.address() as net.AddressInfo).port
    probe.close(() => resume(Effect.succeed(port)))
  })
})

/** The codes on an error and its `cause` chain. */
const codesOf = (error: unknown): Array<string> => {
  const codes: Array<string> = []
  for (let e: unknown = error, depth = 0; typeof e === "object" && e !== null && depth < 6; depth++) {
    const code = (e as { code?: unknown }).code
    if (typeof code === "string") codes.push(code)
    const next = (e as { cause?: unknown; reason?: unknown }).reason ?? (e as { cause?: unknown }).cause
    e = next
  }
  return codes
}

const client = Layer.fresh(httpClientLayer(CONNECT_TIMEOUT_MS))

describe("ConnectTimeoutAgents", () => {
  it.live("https: a TLS handshake that never finishes fails with the connect-timeout code", () =>
    Effect.gen(function*() {
      // Accepts TCP and never answers the ClientHello: connected, never ready.
      let connections = 0
      const port = yield* listen(net.createServer(() => {
        connections++
      }))
      const exit = yield* HttpClient.post(`https://127.0.0.1:${port}/api`).pipe(Effect.exit)
      assert.isTrue(Exit.isFailure(exit))
      const error = Exit.isFailure(exit) ? exit.cause.reasons[0] : undefined
      const failure = error !== undefined && "error" in error ? error.error : error
      assert.include(codesOf(failure), CONNECT_TIMEOUT_CODE)
      assert.strictEqual(connections, 1, "one connection was made, and never got ready")
    }).pipe(Effect.scoped, Effect.provide(client)))

  it.live("http: a connected request is not cut by the guard, however long the answer takes", () =>
    Effect.gen(function*() {
      const seen: Array<string> = []
      let release: (() => void) | undefined
      const server = http.createServer((request, response) => {
        seen.push(request.url ?? "")
        release = () => response.end("late but fine")
      })
      const port = yield* listen(server)
      const call = yield* HttpClient.get(`http://127.0.0.1:${port}/slow`).pipe(
        Effect.flatMap((response) => response.text),
        Effect.forkScoped
      )
      // Wait until the request has arrived, then past the guard's deadline
      // (a real socket timer), before answering.
      for (let i = 0; i < 400 && release === undefined; i++) {
        yield* Effect.promise(() => new Promise((r) => setImmediate(r)))
      }
      assert.deepStrictEqual(seen, ["/slow"])
      yield* Effect.promise(() => new Promise((r) => setTimeout(r, CONNECT_TIMEOUT_MS * 3)))
      release!()
      assert.strictEqual(yield* Fiber.join(call), "late but fine")
    }).pipe(Effect.scoped, Effect.provide(client)))

  it.live("http: sequential requests reuse one kept-alive connection; a refused one fails fast with ECONNREFUSED", () =>
    Effect.gen(function*() {
      let connections = 0
      const server = http.createServer((_request, response) => response.end("ok"))
      server.on("connection", () => connections++)
      const port = yield* listen(server)
      for (let i = 0; i < 3; i++) {
        const text = yield* HttpClient.get(`http://127.0.0.1:${port}/n${i}`).pipe(Effect.flatMap((r) => r.text))
        assert.strictEqual(text, "ok")
      }
      assert.strictEqual(connections, 1)

      // Refused at once, not the timeout.
      const free = yield* freePort
      const exit = yield* HttpClient.get(`http://127.0.0.1:${free}/`).pipe(Effect.exit)
      const error = Exit.isFailure(exit) ? exit.cause.reasons[0] : undefined
      const failure = error !== undefined && "error" in error ? error.error : error
      const codes = codesOf(failure)
      assert.include(codes, "ECONNREFUSED")
      assert.notInclude(codes, CONNECT_TIMEOUT_CODE)
    }).pipe(Effect.scoped, Effect.provide(client)))
})
