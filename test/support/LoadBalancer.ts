/**
 * A small HTTP load balancer on 127.0.0.1, standing in for Render's router in
 * front of several instances: each request goes to the next backend in turn;
 * a backend that refuses the connection (killed, not listening yet) is skipped
 * for that request; when none answers, the client gets `502`, as from Render.
 * Bodies are buffered (webhooks and Kie callbacks are small).
 */
import { Effect } from "effect"
import * as http from "node:http"
import type { AddressInfo } from "node:net"

export interface LoadBalancer {
  /** `http://127.0.0.1:<port>`. */
  readonly url: string
  /** The ports requests are spread over, replacing the previous set. */
  readonly setBackends: (ports: ReadonlyArray<number>) => void
  /** Requests answered `502` because no backend took them. */
  readonly failed: () => number
}

const forward = (
  agent: http.Agent,
  port: number,
  req: http.IncomingMessage,
  body: Buffer
): Promise<{ status: number; headers: http.IncomingHttpHeaders; body: Buffer } | undefined> =>
  new Promise((resolve) => {
    const upstream = http.request(
      {
        host: "127.0.0.1",
        port,
        method: req.method,
        path: req.url,
        headers: { ...req.headers, host: `127.0.0.1:${port}` },
        agent
      },
      (res) => {
        const chunks: Array<Buffer> = []
        res.on("data", (chunk: Buffer) => chunks.push(chunk))
        res.on(
          "end",
          () => resolve({ status: res.statusCode ?? 502, headers: res.headers, body: Buffer.concat(chunks) })
        )
        res.on("error", () => resolve(undefined))
      }
    )
    // A bound per try, so a frozen backend cannot hold a request forever.
    upstream.setTimeout(30_000, () => upstream.destroy())
    upstream.on("error", () => resolve(undefined))
    upstream.end(body)
  })

/** Starts the balancer; it stops when the scope closes. */
export const startLoadBalancer = Effect.acquireRelease(
  Effect.promise(async () => {
    let backends: ReadonlyArray<number> = []
    let next = 0
    let failed = 0
    const agent = new http.Agent({ keepAlive: true, maxSockets: 64 })
    const server = http.createServer((req, res) => {
      const chunks: Array<Buffer> = []
      req.on("data", (chunk: Buffer) => chunks.push(chunk))
      // Answers from its own promise: nothing awaits the listener, and a failure ends in a 502 below.
      req.on("end", () => void forwardOne())
      const forwardOne = async () => {
        const body = Buffer.concat(chunks)
        const order = backends.map((_, i) => backends[(next + i) % backends.length]!)
        next++
        for (const port of order) {
          const answer = await forward(agent, port, req, body)
          if (answer === undefined) continue
          const { connection: _connection, "keep-alive": _keepAlive, "transfer-encoding": _te, ...headers } =
            answer.headers
          res.writeHead(answer.status, headers)
          res.end(answer.body)
          return
        }
        failed++
        res.writeHead(502, { "content-type": "text/plain" })
        res.end("no healthy backend")
      }
    })
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve))
    const balancer: LoadBalancer = {
      url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
      setBackends: (ports) => void (backends = [...ports]),
      failed: () => failed
    }
    return { balancer, server, agent }
  }),
  ({ agent, server }) =>
    Effect.promise(() =>
      new Promise<void>((resolve) => {
        agent.destroy()
        server.closeAllConnections()
        server.close(() => resolve())
      })
    )
).pipe(Effect.map(({ balancer }) => balancer))
