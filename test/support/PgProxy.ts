/**
 * A byte-for-byte proxy in front of the test PostgreSQL, to simulate a
 * network partition: `freeze()` stops forwarding in both directions while
 * keeping every socket open, so neither side sees a close (as when a host
 * vanishes). Listens on a unix socket or on 127.0.0.1, matching the server.
 * It also counts the clients' round trips (`roundTrips`): each simple Query
 * and each Sync of the extended protocol is one request the client then
 * waits for.
 */
import { Effect } from "effect"
import * as fs from "node:fs"
import * as net from "node:net"
import * as os from "node:os"
import * as path from "node:path"

export interface PgProxy {
  /** `url` with its host/port replaced by the proxy's. */
  readonly url: string
  /** Stops forwarding; sockets stay open. */
  readonly freeze: () => void
  /** Resets every connection through the proxy (both sides see a close). */
  readonly cut: () => void
  /** Round trips the clients asked for so far: simple Queries plus extended-protocol Syncs. */
  readonly roundTrips: () => number
}

/** SSLRequest and GSSENCRequest: answered by one byte, then the startup proper follows. */
const ENCRYPTION_REQUESTS = new Set([80877103, 80877104])

/**
 * Counts a client's round trips in its stream of frontend messages: until the
 * startup message they are untyped (length first), then typed (a byte, then
 * the length). Assumes no TLS (the tests' server answers 'N').
 */
const makeRoundTripCounter = (count: () => void) => {
  let buffered: Buffer = Buffer.alloc(0)
  let started = false
  return (chunk: Buffer) => {
    buffered = buffered.length === 0 ? chunk : Buffer.concat([buffered, chunk])
    for (;;) {
      if (!started) {
        if (buffered.length < 8) return
        const length = buffered.readInt32BE(0)
        if (buffered.length < length) return
        if (!ENCRYPTION_REQUESTS.has(buffered.readInt32BE(4))) started = true
        buffered = buffered.subarray(length)
        continue
      }
      if (buffered.length < 5) return
      const length = buffered.readInt32BE(1)
      if (buffered.length < 1 + length) return
      const type = String.fromCharCode(buffered[0]!)
      if (type === "Q" || type === "S") count()
      buffered = buffered.subarray(1 + length)
    }
  }
}

interface Target {
  readonly connect: () => net.Socket
  readonly listen: (
    server: net.Server
  ) => Promise<{ readonly rewrite: (url: URL) => void; readonly dispose: () => void }>
}

const targetOf = (url: URL): Target => {
  const socketDir = url.searchParams.get("host")
  const port = Number(url.searchParams.get("port") ?? (url.port || "5432"))
  if (socketDir !== null && socketDir.startsWith("/")) {
    return {
      connect: () => net.connect(path.join(socketDir, `.s.PGSQL.${port}`)),
      listen: (server) =>
        new Promise((resolve, reject) => {
          const dir = fs.mkdtempSync(path.join(os.tmpdir(), "pgproxy-"))
          server.once("error", reject)
          server.listen(path.join(dir, `.s.PGSQL.${port}`), () =>
            resolve({
              rewrite: (u) => u.searchParams.set("host", dir),
              dispose: () => fs.rmSync(dir, { recursive: true, force: true })
            }))
        })
    }
  }
  return {
    connect: () => net.connect(port, url.hostname || "127.0.0.1"),
    listen: (server) =>
      new Promise((resolve, reject) => {
        server.once("error", reject)
        server.listen(0, "127.0.0.1", () => {
          const address = server.address() as net.AddressInfo
          resolve({
            rewrite: (u) => {
              u.hostname = "127.0.0.1"
              u.port = String(address.port)
              u.searchParams.delete("host")
              u.searchParams.delete("port")
            },
            dispose: () => {}
          })
        })
      })
  }
}

/** Starts a proxy for the database at `url`; stops it when the scope closes. */
export const startPgProxy = (url: string) =>
  Effect.acquireRelease(
    Effect.promise(async () => {
      const parsed = new URL(url)
      const target = targetOf(parsed)
      let frozen = false
      let roundTrips = 0
      const sockets = new Set<net.Socket>()
      const server = net.createServer((client) => {
        const upstream = target.connect()
        sockets.add(client)
        sockets.add(upstream)
        const forward = (from: net.Socket, to: net.Socket) => {
          from.on("data", (chunk) => {
            if (!frozen) to.write(chunk)
          })
          from.on("close", () => {
            if (!frozen) to.destroy()
          })
          from.on("error", () => {})
        }
        const countRoundTrips = makeRoundTripCounter(() => {
          roundTrips++
        })
        client.on("data", countRoundTrips)
        forward(client, upstream)
        forward(upstream, client)
      })
      const { dispose, rewrite } = await target.listen(server)
      rewrite(parsed)
      const proxy: PgProxy = {
        url: parsed.href,
        freeze: () => void (frozen = true),
        cut: () => {
          for (const socket of sockets) socket.destroy()
        },
        roundTrips: () => roundTrips
      }
      return { proxy, server, sockets, dispose }
    }),
    ({ dispose, server, sockets }) =>
      Effect.promise(() =>
        new Promise<void>((resolve) => {
          for (const socket of sockets) socket.destroy()
          server.close(() => resolve())
          dispose()
        })
      )
  ).pipe(Effect.map(({ proxy }) => proxy))
