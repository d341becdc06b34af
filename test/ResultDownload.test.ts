/**
 * Result downloads against real HTTP servers on 127.0.0.1: what is refused
 * (private addresses, redirects to them, bytes that are not an image, bodies
 * over the limit) and what is allowed (the KIE_BASE_URL exception,
 * ALLOW_PRIVATE_RESULT_URLS). Host names are answered by a resolver table, so
 * nothing here asks real DNS; a test that needs a "public" first hop counts its
 * own 127.0.0.1 server as public through the `isPrivate` option.
 */
import { assert, describe, it, layer } from "@effect/vitest"
import { Effect, Layer, Option } from "effect"
import * as http from "node:http"
import type { LookupAddress } from "node:dns"
import { BoundedBody } from "../src/media/BoundedBody.ts"
import { imageKind } from "../src/media/ImageMagic.ts"
import { pinnedLookup, type Resolve } from "../src/media/PinnedLookup.ts"
import { isPrivateAddress } from "../src/media/PrivateAddress.ts"
import {
  DOWNLOAD_USER_AGENT,
  type DownloadFailed,
  ResultDownload,
  type ResultDownloadOptions,
  type ResultDownloadShape
} from "../src/media/ResultDownload.ts"
import { t } from "../src/texts/Messages.ts"
import { withEngine } from "./support/EngineHarness.ts"
import { makePng, makeWebpHeader } from "./support/images.ts"
import { KieTestDatabase } from "./support/KieTestStack.ts"
import { TestConfigLive } from "./support/TestConfig.ts"

interface Seen {
  readonly path: string
  readonly host: string
  readonly userAgent: string
}

type Handler = (req: http.IncomingMessage, res: http.ServerResponse) => void

/** An HTTP server on 127.0.0.1 answering by path; records every request it gets. */
const serve = (routes: Record<string, Handler>) =>
  Effect.acquireRelease(
    Effect.callback<{ readonly server: http.Server; readonly url: string; readonly seen: Array<Seen> }>((resume) => {
      const seen: Array<Seen> = []
      const server = http.createServer((req, res) => {
        const path = req.url ?? "/"
        seen.push({ path, host: req.headers.host ?? "", userAgent: req.headers["user-agent"] ?? "" })
        const route = routes[path]
        if (route === undefined) res.writeHead(404).end()
        else route(req, res)
      })
      server.listen(0, "127.0.0.1", () => {
        const address = server.address()
        const port = typeof address === "object" && address !== null ? address.port : 0
        resume(Effect.succeed({ server, url: `http://127.0.0.1:${port}`, seen }))
      })
    }),
    ({ server }) =>
      Effect.callback<void>((resume) => {
        server.closeAllConnections()
        server.close(() => resume(Effect.void))
      })
  )

/** A resolver answering from a table (unknown names fail like DNS does) and counting its calls. */
const resolverTable = (table: Record<string, ReadonlyArray<string>>) => {
  const calls: Array<string> = []
  const resolve: Resolve = (hostname) => {
    calls.push(hostname)
    const addresses = table[hostname]
    if (addresses === undefined) {
      return Promise.reject(Object.assign(new Error(`getaddrinfo ENOTFOUND ${hostname}`), { code: "ENOTFOUND" }))
    }
    return Promise.resolve(addresses.map((address) => ({ address, family: address.includes(":") ? 6 : 4 })))
  }
  return { calls, resolve }
}

/** Kie on a public-looking name, so its exception does not apply. */
const PUBLIC_KIE = { KIE_BASE_URL: "https://api.kie.test" }
const PUBLIC_KIE_ADDRESS = { "api.kie.test": ["203.0.113.10"] }

const downloader = (env: Record<string, string>, options: ResultDownloadOptions) =>
  Effect.service(ResultDownload).pipe(
    Effect.provide(ResultDownload.layerWith(options).pipe(Layer.provide(TestConfigLive(env))))
  )

/** The error of a download that must fail (a success fails the test). */
const failureOf = (effect: Effect.Effect<Uint8Array, DownloadFailed>) =>
  effect.pipe(Effect.andThen(Effect.die(new Error("the download must fail"))), Effect.flip)

const png = makePng(40, 30)
const sendPng: Handler = (_req, res) => res.writeHead(200, { "content-type": "image/png" }).end(png)
const redirectTo = (location: string): Handler => (_req, res) => res.writeHead(302, { location }).end()

/** Writes `first`, then filler chunks until the client goes away; never ends by itself. */
const endless = (first: Buffer): Handler => (_req, res) => {
  res.writeHead(200, { "content-type": "application/octet-stream" })
  res.write(first)
  const filler = Buffer.alloc(64 * 1024, 0x41)
  const more = () => {
    if (res.destroyed || res.writableEnded) return
    if (res.write(filler)) setImmediate(more)
    else res.once("drain", more)
  }
  more()
}

/** 127.0.0.1 (where the test servers are) counted as public, every other address as usual. */
const loopbackIsPublic = (address: string) => address !== "127.0.0.1" && isPrivateAddress(address)

describe("ResultDownload", () => {
  describe("the address check", () => {
    it("refuses loopback, private, link-local, multicast and reserved addresses, in every IPv6 disguise", () => {
      const refused = [
        "0.0.0.0",
        "0.1.2.3",
        "10.0.0.1",
        "10.255.255.255",
        "100.64.0.1",
        "100.127.255.255",
        "127.0.0.1",
        "127.8.9.10",
        "169.254.169.254",
        "172.16.0.1",
        "172.31.255.255",
        "192.168.1.1",
        "224.0.0.1",
        "239.255.255.250",
        "240.0.0.1",
        "255.255.255.255",
        "::",
        "::1",
        "[::1]",
        "fc00::1",
        "fd12:3456::1",
        "fe80::1",
        "fe80::1%eth0",
        "febf::1",
        "ff02::1",
        "::ffff:127.0.0.1",
        "::ffff:7f00:1",
        "::ffff:10.1.2.3",
        "::ffff:a9fe:a9fe",
        "::127.0.0.1",
        "64:ff9b::10.0.0.1",
        "64:ff9b::a9fe:a9fe",
        "64:ff9b::127.0.0.1",
        "2002:c0a8:0101::1",
        "2002:7f00:1::",
        "not-an-address",
        ""
      ]
      const allowed = [
        "8.8.8.8",
        "1.1.1.1",
        "100.63.255.255",
        "100.128.0.0",
        "172.15.255.255",
        "172.32.0.0",
        "169.253.0.1",
        "192.169.0.1",
        "223.255.255.255",
        "203.0.113.10",
        "11.0.0.1",
        "2606:4700:4700::1111",
        "2001:4860:4860::8888",
        "[2a00:1450::1]",
        "::ffff:8.8.8.8",
        "64:ff9b::8.8.8.8",
        "2002:0808:0808::1",
        "fbff::1",
        "fe7f::1"
      ]
      for (const address of refused) assert.isTrue(isPrivateAddress(address), `${address} must be refused`)
      for (const address of allowed) assert.isFalse(isPrivateAddress(address), `${address} must be allowed`)
    })

    it("pins the connection: every host name is answered with the checked addresses", () => {
      const lookup = pinnedLookup([{ address: "203.0.113.7", family: 4 }, { address: "2001:db8::7", family: 6 }])
      const answers: Array<unknown> = []
      lookup("rebinding.example", { all: true }, (error, addresses) => answers.push(error, addresses))
      lookup("rebinding.example", {}, (error, address, family) => answers.push(error, address, family))
      lookup("other.example", { family: 6 }, (error, address, family) => answers.push(error, address, family))
      const all: Array<LookupAddress> = [{ address: "203.0.113.7", family: 4 }, { address: "2001:db8::7", family: 6 }]
      assert.deepStrictEqual(answers, [null, all, null, "203.0.113.7", 4, null, "2001:db8::7", 6])
    })
  })

  describe("the image check and the buffer", () => {
    it("recognises PNG, JPEG, WebP and GIF by their signature, nothing else", () => {
      assert.strictEqual(imageKind(png), "png")
      assert.strictEqual(imageKind(Buffer.from([0xff, 0xd8, 0xff, 0xe0, 0, 0x10])), "jpeg")
      assert.strictEqual(imageKind(makeWebpHeader(10, 10)), "webp")
      assert.strictEqual(imageKind(Buffer.from("GIF89a\x01\x00\x01\x00", "latin1")), "gif")
      assert.strictEqual(imageKind(Buffer.from("GIF87a\x01\x00\x01\x00", "latin1")), "gif")
      for (const other of ["<html><body>", "{\"code\":200}", "RIFF\0\0\0\0WAVEfmt ", "\x89PNG", ""]) {
        assert.isUndefined(imageKind(Buffer.from(other, "latin1")), JSON.stringify(other))
      }
    })

    it("fills one buffer: sized by the declared length, grown without one, never past the limit", () => {
      const declared = new BoundedBody(1000, 10)
      assert.isTrue(declared.append(Buffer.from("hello")))
      assert.isTrue(declared.append(Buffer.from("world")))
      const bytes = declared.bytes()
      assert.strictEqual(Buffer.from(bytes).toString(), "helloworld")
      assert.strictEqual(bytes.buffer.byteLength, 10, "allocated once at the declared size, outside the shared pool")

      const growing = new BoundedBody(600_000)
      const chunk = Buffer.alloc(200_000, 7)
      assert.isTrue(growing.append(chunk))
      assert.isTrue(growing.append(chunk))
      assert.isTrue(growing.append(chunk))
      assert.isFalse(growing.append(Buffer.alloc(1)), "one byte over the limit")
      assert.strictEqual(growing.size, 600_000)
      assert.isAtMost(growing.bytes().buffer.byteLength, 600_000, "never grown past the limit")
      assert.isTrue(growing.bytes().every((b) => b === 7))
    })
  })

  describe("refused", () => {
    it.effect("a result URL on 127.0.0.1 when KIE_BASE_URL is public and ALLOW_PRIVATE_RESULT_URLS is false", () =>
      Effect.scoped(Effect.gen(function*() {
        const server = yield* serve({ "/r.png": sendPng })
        const { resolve } = resolverTable(PUBLIC_KIE_ADDRESS)
        const downloads = yield* downloader(PUBLIC_KIE, { resolve })
        const error = yield* failureOf(downloads.download(`${server.url}/r.png?token=secret`))
        assert.strictEqual(error.reason, "refused")
        assert.include(error.message, "127.0.0.1:")
        assert.notInclude(error.message, "secret", "never the path or query")
        assert.lengthOf(server.seen, 0, "nothing was requested")
      })))

    it.effect("a name that resolves to a private address, also when only one of its addresses is private", () =>
      Effect.scoped(Effect.gen(function*() {
        const server = yield* serve({ "/r.png": sendPng })
        const port = new URL(server.url).port
        const { resolve } = resolverTable({
          ...PUBLIC_KIE_ADDRESS,
          "metadata.test": ["169.254.169.254"],
          "mixed.test": ["203.0.113.5", "127.0.0.1"],
          "mapped.test": ["::ffff:127.0.0.1"]
        })
        const downloads = yield* downloader({ ...PUBLIC_KIE, ALLOW_PRIVATE_RESULT_URLS: "false" }, { resolve })
        for (const host of ["metadata.test", "mixed.test", "mapped.test", "[::1]", "0x7f.1", "2130706433"]) {
          const error = yield* failureOf(downloads.download(`http://${host}:${port}/r.png`))
          assert.strictEqual(error.reason, "refused", host)
        }
        assert.lengthOf(server.seen, 0)
      })))

    it.effect("a redirect to a private address, a private name or another scheme, from an allowed first hop", () =>
      Effect.scoped(Effect.gen(function*() {
        const server = yield* serve({
          "/to-metadata": redirectTo("http://169.254.169.254/latest/meta-data/"),
          "/to-name": redirectTo("http://internal.test/admin"),
          "/to-ipv6": redirectTo("http://[::1]/"),
          "/to-file": redirectTo("file:///etc/passwd"),
          "/loop": redirectTo("/loop")
        })
        const { calls, resolve } = resolverTable({ ...PUBLIC_KIE_ADDRESS, "internal.test": ["10.1.2.3"] })
        const downloads = yield* downloader(PUBLIC_KIE, { resolve, isPrivate: loopbackIsPublic })
        const reasons: Record<string, string> = {}
        for (const path of ["/to-metadata", "/to-name", "/to-ipv6", "/to-file", "/loop"]) {
          reasons[path] = (yield* failureOf(downloads.download(`${server.url}${path}`))).reason
        }
        assert.deepStrictEqual(reasons, {
          "/to-metadata": "refused",
          "/to-name": "refused",
          "/to-ipv6": "refused",
          "/to-file": "bad-url",
          "/loop": "redirects"
        })
        assert.include(calls, "internal.test", "the redirect target was resolved and checked")
        assert.strictEqual(server.seen.filter((s) => s.path === "/loop").length, 4, "the first request and 3 redirects")
      })))

    it.effect("bytes that are not an image, stopped at the first bytes even when the body would be huge", () =>
      Effect.scoped(Effect.gen(function*() {
        const server = yield* serve({
          "/page": (_req, res) => res.writeHead(200, { "content-type": "text/html" }).end("<html>expired</html>"),
          "/short": (_req, res) => res.writeHead(200).end("GIF"),
          "/endless-html": endless(Buffer.from("<!doctype html><html>"))
        })
        const downloads = yield* downloader({ ALLOW_PRIVATE_RESULT_URLS: "true" }, {})
        const page = yield* failureOf(downloads.download(`${server.url}/page`))
        assert.strictEqual(page.reason, "not-image")
        assert.include(page.message, "text/html")
        assert.strictEqual((yield* failureOf(downloads.download(`${server.url}/short`))).reason, "not-image")
        // Read to the 50 MB limit, this would fail as too-large instead.
        assert.strictEqual((yield* failureOf(downloads.download(`${server.url}/endless-html`))).reason, "not-image")
      })))

    it.effect("a body over the limit: by its Content-Length before reading, or while reading without one", () =>
      Effect.scoped(Effect.gen(function*() {
        const big = makePng(400, 400, 3)
        const server = yield* serve({
          "/declared": (_req, res) => res.writeHead(200, { "content-length": String(big.length) }).end(big),
          "/endless-png": endless(png)
        })
        const downloads = yield* downloader({ ALLOW_PRIVATE_RESULT_URLS: "true" }, {})
        const declared = yield* failureOf(downloads.download(`${server.url}/declared`, big.length - 1))
        assert.strictEqual(declared.reason, "too-large")
        assert.include(declared.message, `${big.length} bytes declared`)
        const streamed = yield* failureOf(downloads.download(`${server.url}/endless-png`, 300_000))
        assert.strictEqual(streamed.reason, "too-large")
        assert.include(streamed.message, "more than 300000 bytes")
        const exact = yield* downloads.download(`${server.url}/declared`, big.length)
        assert.deepStrictEqual(Buffer.from(exact), big, "exactly at the limit is fine")
      })))
  })

  describe("allowed", () => {
    it.effect("a public host: connected to the address the resolver gave, the name kept for Host", () =>
      Effect.scoped(Effect.gen(function*() {
        const server = yield* serve({
          "/r.png": sendPng,
          "/hop": (req, res) => redirectTo(`http://cdn.test:${req.socket.localPort}/r.png`)(req, res)
        })
        const port = new URL(server.url).port
        const { calls, resolve } = resolverTable({
          ...PUBLIC_KIE_ADDRESS,
          "images.test": ["127.0.0.1"],
          "cdn.test": ["127.0.0.1"]
        })
        const downloads = yield* downloader(PUBLIC_KIE, { resolve, isPrivate: loopbackIsPublic })
        const bytes = yield* downloads.download(`http://images.test:${port}/hop`)
        assert.deepStrictEqual(Buffer.from(bytes), png)
        assert.deepStrictEqual(server.seen, [
          { path: "/hop", host: `images.test:${port}`, userAgent: DOWNLOAD_USER_AGENT },
          { path: "/r.png", host: `cdn.test:${port}`, userAgent: DOWNLOAD_USER_AGENT }
        ])
        assert.include(DOWNLOAD_USER_AGENT, "zimage-bot/")
        assert.deepStrictEqual(calls, ["images.test", "cdn.test"], "each hop resolved once, and nothing else asked")
      })))

    it.effect("loopback results when KIE_BASE_URL is on loopback (the local double) or on a private name", () =>
      Effect.scoped(Effect.gen(function*() {
        const server = yield* serve({ "/r.png": sendPng })
        const literal = yield* downloader({ KIE_BASE_URL: "http://127.0.0.1:9" }, {})
        assert.deepStrictEqual(Buffer.from(yield* literal.download(`${server.url}/r.png`)), png)
        const { resolve } = resolverTable({ "kie.internal": ["10.0.0.5"] })
        const named = yield* downloader({ KIE_BASE_URL: "http://kie.internal:8080" }, { resolve })
        assert.deepStrictEqual(Buffer.from(yield* named.download(`${server.url}/r.png`)), png)
      })))

    it.effect("private results with ALLOW_PRIVATE_RESULT_URLS=true, in every image format", () =>
      Effect.scoped(Effect.gen(function*() {
        const gif = Buffer.from("GIF89a\x01\x00\x01\x00\x00\x00\x00;", "latin1")
        const webp = makeWebpHeader(64, 64)
        const server = yield* serve({
          "/r.png": sendPng,
          "/r.gif": (_req, res) => res.writeHead(200).end(gif),
          "/r.webp": (_req, res) => res.writeHead(200).end(webp)
        })
        const { resolve } = resolverTable(PUBLIC_KIE_ADDRESS)
        const downloads: ResultDownloadShape = yield* downloader(
          { ...PUBLIC_KIE, ALLOW_PRIVATE_RESULT_URLS: "true" },
          { resolve }
        )
        assert.deepStrictEqual(Buffer.from(yield* downloads.download(`${server.url}/r.png`)), png)
        assert.deepStrictEqual(Buffer.from(yield* downloads.download(`${server.url}/r.gif`)), gif)
        assert.deepStrictEqual(Buffer.from(yield* downloads.download(`${server.url}/r.webp`)), webp)
      })))
  })
})

layer(KieTestDatabase, { timeout: "120 seconds" })("ResultDownload in the engine", (it) => {
  it.effect("a result that is not an image: failed at once as download_refused, the user told why, nothing sent", () =>
    withEngine({}, (h) =>
      Effect.gen(function*() {
        h.kie.serveResult("result.png", Buffer.from("<html><body>Access denied</body></html>"))
        const g = yield* h.create({ userId: 801 })
        yield* h.startEngine
        yield* h.advanceUntil(Effect.map(h.row(g.id), (r) => Option.isSome(r.notifiedAt)), { maxSteps: 60 })
        const row = yield* h.row(g.id)
        assert.strictEqual(row.failCode, "download_refused")
        assert.strictEqual(h.kie.counters.result, 1, "not retried: the same URL would answer the same")
        assert.strictEqual(
          h.telegram.messages(801).find((m) => m.messageId === g.statusMessageId)?.text,
          t("ru").failed(t("ru").deliveryRefused)
        )
        assert.lengthOf(h.telegram.calls("sendPhoto"), 0)
        assert.lengthOf(h.telegram.calls("sendDocument"), 0)
      })))

  it.effect("a GIF result: delivered as a document named .gif (Telegram takes only PNG, JPEG and WebP as photos here)", () =>
    withEngine({}, (h) =>
      Effect.gen(function*() {
        h.kie.serveResult("result.png", Buffer.from("GIF89a\x02\x00\x02\x00\x00\x00\x00;", "latin1"))
        const g = yield* h.create({ userId: 802 })
        yield* h.startEngine
        yield* h.advanceUntil(Effect.map(h.row(g.id), (r) => r.status === "delivered"), { maxSteps: 60 })
        assert.lengthOf(h.telegram.calls("sendPhoto"), 0)
        const documents = h.telegram.calls("sendDocument")
        assert.lengthOf(documents, 1)
        assert.strictEqual(documents[0]!.files[0]?.filename, `zimage-${g.id}.gif`)
      })))
})
