/**
 * The floor of the webhook figure: a bare `node:http` server that reads the
 * body, parses it as JSON and answers 200, with no database and no Effect.
 * `bench/run.ts` runs it as a process of its own, like the service, and loads
 * it with the same client at the same concurrency, so the table shows how
 * much of the webhook's cost is HTTP and the load generator on this machine.
 *
 *   node bench/httpFloor.ts <port>     # prints "listening" when ready
 */
import { createServer } from "node:http"

const port = Number(process.argv[2])
const server = createServer((request, response) => {
  const chunks: Array<Buffer> = []
  request.on("data", (chunk: Buffer) => chunks.push(chunk))
  request.on("end", () => {
    JSON.parse(Buffer.concat(chunks).toString("utf8"))
    response.writeHead(200, { "content-type": "application/json" })
    response.end("{\"ok\":true}")
  })
})
server.listen(port, "127.0.0.1", () => process.stdout.write("listening\n"))
process.on("SIGTERM", () => server.close(() => process.exit(0)))
