/**
 * Keeps `docs/contract.md` in step with the code.
 *
 * The sets are collected from the source files as text, parsed into syntax
 * trees (rolldown's parser) so that only real string and template literals
 * count, never comments or identifiers:
 * - environment variables: every all-caps literal in `src/platform/AppConfig.ts`
 *   and every `process.env.X` in `src/`; cross-checked against the names
 *   `AppConfig.load` actually asks its `ConfigProvider` for;
 * - callback data: every literal starting with `zimage:` in
 *   `src/texts/Messages.ts` (a template's `${…}` is written `<…>` in the doc);
 *   cross-checked against the data the keyboards really carry;
 * - bot commands: what `botCommands` registers;
 * - log markers: every literal in `src/` that starts with `[NAME]` (a
 *   template's `${…}` inside the brackets is written `n`, as in `[WORKER_n]`);
 * - metric names: every `zimage_…` literal in `src/observability/Metrics.ts`;
 * - `/health` fields and `/metrics` series: what the whole app, started on a
 *   test database, answers.
 *
 * Each must appear in its section of the doc, and each row of those sections'
 * tables must still name something the code has. The checks are plain
 * functions, so one test can show that removing a row is caught.
 */
import { describe, expect, it } from "@effect/vitest"
import { ConfigProvider, Effect } from "effect"
import { readdirSync, readFileSync } from "node:fs"
import { join } from "node:path"
import { parseAst } from "rolldown/parseAst"
import { AppConfig } from "../src/platform/AppConfig.ts"
import * as FakeTelegram from "./fakes/FakeTelegram.ts"
import { startApp } from "./support/TestApp.ts"
import { freshDatabaseUrl } from "./support/TestDatabase.ts"
import {
  botCommands,
  doneKeyboard,
  type InlineKeyboard,
  ratioKeyboard,
  retryKeyboard,
  welcomeKeyboard
} from "../src/texts/Messages.ts"

const root = new URL("../", import.meta.url)
const read = (path: string) => readFileSync(new URL(path, root), "utf8")

// ---------------------------------------------------------------------------
// Source side

/** Stands for a template literal's `${…}` in the collected text. */
const HOLE = "\u0000"

type Node = { readonly type: string; readonly [key: string]: unknown }
const isNode = (u: unknown): u is Node => typeof u === "object" && u !== null && typeof (u as Node).type === "string"

/** Calls `visit` on every node of a syntax tree. */
const walk = (node: unknown, visit: (node: Node) => void): void => {
  if (Array.isArray(node)) return node.forEach((child) => walk(child, visit))
  if (!isNode(node)) return
  visit(node)
  for (const [key, child] of Object.entries(node)) {
    if (key !== "parent" && typeof child === "object" && child !== null) walk(child, visit)
  }
}

const parse = (path: string) => parseAst(read(path), { lang: "ts" }, path)

/** Every string literal and template literal of a file, holes as `HOLE`; comments are not literals. */
const literalsOf = (path: string): Array<string> => {
  const found: Array<string> = []
  walk(parse(path), (node) => {
    if (node.type === "Literal" && typeof node.value === "string") found.push(node.value)
    if (node.type === "TemplateLiteral") {
      const quasis = node.quasis as ReadonlyArray<{ readonly value: { readonly cooked: string | null; raw: string } }>
      found.push(quasis.map((q) => q.value.cooked ?? q.value.raw).join(HOLE))
    }
  })
  return found
}

/** `X` of every `process.env.X` / `process.env["X"]` in a file. */
const processEnvReads = (path: string): Array<string> => {
  const found: Array<string> = []
  const isProcessEnv = (u: unknown) =>
    isNode(u) && u.type === "MemberExpression" && isNode(u.object) && u.object.type === "Identifier" &&
    u.object.name === "process" && isNode(u.property) && u.property.name === "env"
  walk(parse(path), (node) => {
    if (node.type !== "MemberExpression" || !isProcessEnv(node.object) || !isNode(node.property)) return
    const property = node.property
    if (property.type === "Identifier" && !node.computed) found.push(property.name as string)
    if (property.type === "Literal" && typeof property.value === "string") found.push(property.value)
  })
  return found
}

const sourceFiles = (dir: string): Array<string> =>
  readdirSync(new URL(dir, root), { withFileTypes: true }).flatMap((entry) =>
    entry.isDirectory()
      ? sourceFiles(join(dir, entry.name))
      : entry.name.endsWith(".ts")
      ? [join(dir, entry.name)]
      : []
  )

const ENV_NAME = /^[A-Z][A-Z0-9]*(?:_[A-Z0-9]+)*$/

/** Environment variable names spelled out in AppConfig.ts. */
const envVarsInAppConfig = (): Set<string> =>
  new Set(literalsOf("src/platform/AppConfig.ts").filter((s) => ENV_NAME.test(s)))

/** Those, plus every `process.env.X` anywhere in src/. */
const envVarsInSource = (): Set<string> =>
  new Set([...envVarsInAppConfig(), ...sourceFiles("src").flatMap(processEnvReads)])

/** The names `AppConfig.load` asks for with `env` (reads stop at the first invalid value). */
const envVarsReadBy = (env: Record<string, string>): Effect.Effect<Set<string>> => {
  const asked = new Set<string>()
  const base = ConfigProvider.fromUnknown(env)
  const recording = ConfigProvider.make((path) => {
    if (typeof path[0] === "string") asked.add(path[0])
    return base.load(path)
  })
  return AppConfig.load.pipe(
    Effect.provideService(ConfigProvider.ConfigProvider, recording),
    Effect.orDie,
    Effect.as(asked)
  )
}

/** `zimage:ratio:${ratio}` → `zimage:ratio:<>`. */
const canonicalData = (text: string) => text.replaceAll(HOLE, "<>").replace(/<[^>]*>/g, "<>")

/** Callback data literals of Messages.ts, templates included (holes as `HOLE`). */
const callbackTemplatesInSource = (): Set<string> =>
  new Set(literalsOf("src/texts/Messages.ts").filter((s) => s.startsWith("zimage:")))

const templatePattern = (template: string) =>
  new RegExp("^" + template.split(HOLE).map((part) => part.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")).join(".+") + "$")

const languages = ["ru", "en"] as const

const dataOf = (keyboard: InlineKeyboard): Array<string> =>
  keyboard.inline_keyboard.flat().flatMap((button) => ("callback_data" in button ? [button.callback_data] : []))

/** The data the keyboards without a generation id carry, spelled out (every ratio button, …). */
const fixedCallbackData = (): Set<string> =>
  new Set([
    ...languages.flatMap((lang) => [true, false].flatMap((single) => dataOf(welcomeKeyboard(lang, single)))),
    ...dataOf(ratioKeyboard)
  ])

const allCallbackData = (): Set<string> =>
  new Set([
    ...fixedCallbackData(),
    ...languages.flatMap((lang) => [...dataOf(doneKeyboard(lang, "42")), ...dataOf(retryKeyboard(lang, "42"))])
  ])

const MARKER = new RegExp(`^\\[([A-Z](?:[A-Z0-9_]|${HOLE})*)\\]`)

/** `[LOCK]`, `[WORKER_n]`, … : the bracketed prefix of every literal in src/ that starts with one. */
const markersInSource = (): Set<string> =>
  new Set(
    sourceFiles("src").flatMap(literalsOf).flatMap((text) => {
      const match = MARKER.exec(text)
      return match === null ? [] : [`[${match[1]!.replaceAll(HOLE, "n")}]`]
    })
  )

/** The Prometheus series `GET /metrics` exports. */
const metricsInSource = (): Set<string> =>
  new Set(literalsOf("src/observability/Metrics.ts").filter((s) => /^zimage_[a-z0-9_]+$/.test(s)))

// ---------------------------------------------------------------------------
// Doc side

/** The text under `heading` (a whole line, e.g. "### Markers") up to the next heading of its level or above. */
const section = (doc: string, heading: string): string => {
  const lines = doc.split("\n")
  const start = lines.indexOf(heading)
  if (start === -1) throw new Error(`docs/contract.md has no "${heading}" heading`)
  const level = heading.indexOf(" ")
  const end = lines.findIndex((line, i) => i > start && /^#+ /.test(line) && line.indexOf(" ") <= level)
  return lines.slice(start + 1, end === -1 ? undefined : end).join("\n")
}

const backticked = (text: string): Array<string> => [...text.matchAll(/`([^`\n]+)`/g)].map((m) => m[1]!)

/** The backticked names in the first cell of each table row of a section. */
const firstCells = (text: string): Array<string> =>
  text.split("\n")
    .filter((line) => line.startsWith("|") && !/^\|[\s|:-]+\|?$/.test(line))
    .flatMap((line) => backticked(line.split("|")[1] ?? ""))

interface ContractDrift {
  /** In the code, not in the doc. */
  readonly undocumented: ReadonlyArray<string>
  /** In a table of the doc, gone from the code. */
  readonly stale: ReadonlyArray<string>
}

const drift = (undocumented: Iterable<string>, stale: Iterable<string>): ContractDrift => ({
  undocumented: [...undocumented].sort(),
  stale: [...stale].sort()
})

const checkEnvVars = (doc: string, inSource: ReadonlySet<string>): ContractDrift => {
  const rows = new Set(firstCells(section(doc, "## Environment variables")))
  return drift([...inSource].filter((n) => !rows.has(n)), [...rows].filter((n) => !inSource.has(n)))
}

const checkCallbackData = (
  doc: string,
  templates: ReadonlySet<string>,
  fixed: ReadonlySet<string>
): ContractDrift => {
  const text = section(doc, "### Callback data")
  const mentioned = new Set(backticked(text).map(canonicalData))
  const canonical = new Set([...templates].map(canonicalData))
  const patterns = [...templates].map(templatePattern)
  return drift(
    [...[...templates].map(canonicalData), ...fixed].filter((d) => !mentioned.has(canonicalData(d))),
    firstCells(text).filter((d) => !canonical.has(canonicalData(d)) && !patterns.some((p) => p.test(d)))
  )
}

const checkCommands = (doc: string, commands: ReadonlySet<string>): ContractDrift => {
  const rows = new Set(firstCells(section(doc, "### Commands")))
  return drift([...commands].filter((c) => !rows.has(c)), [...rows].filter((c) => !commands.has(c)))
}

const checkMarkers = (doc: string, inSource: ReadonlySet<string>): ContractDrift => {
  const rows = new Set(firstCells(section(doc, "### Markers")))
  return drift([...inSource].filter((m) => !rows.has(m)), [...rows].filter((m) => !inSource.has(m)))
}

const checkMetrics = (doc: string, inSource: ReadonlySet<string>): ContractDrift => {
  const rows = new Set(firstCells(section(doc, "### `GET /metrics`")))
  return drift([...inSource].filter((m) => !rows.has(m)), [...rows].filter((m) => !inSource.has(m)))
}

/** `kie_pause` is there only while submissions are paused; the doc says so. */
const CONDITIONAL_HEALTH_FIELDS = new Set(["kie_pause"])

const checkHealth = (doc: string, answered: ReadonlySet<string>): ContractDrift => {
  const rows = new Set(firstCells(section(doc, "### `GET /health`")))
  return drift(
    [...answered].filter((f) => !rows.has(f)),
    [...rows].filter((f) => !answered.has(f) && !CONDITIONAL_HEALTH_FIELDS.has(f))
  )
}

const noDrift: ContractDrift = { undocumented: [], stale: [] }

// ---------------------------------------------------------------------------

const doc = read("docs/contract.md")
const required = { TELEGRAM_BOT_TOKEN: "1234567890:AAFakeTokenForTestsOnly_abcdefghijkl", KIE_API_KEY: "kie-test-key" }
const commands = new Set(botCommands("en").map((c) => `/${c.command}`))

describe("docs/contract.md", () => {
  it.effect("collects the environment variables AppConfig reads", () =>
    Effect.gen(function*() {
      const inSource = envVarsInAppConfig()
      const polling = yield* envVarsReadBy(required)
      const webhook = yield* envVarsReadBy({
        ...required,
        PUBLIC_URL: "https://bot.example.com",
        TELEGRAM_WEBHOOK_SECRET: "secret_value-0123456789"
      })
      const read = new Set([...polling, ...webhook])
      // The static collection misses nothing the configuration really reads…
      expect([...read].filter((n) => !inSource.has(n))).toEqual([])
      // …and holds only variable names (AppConfig reads all of them when nothing is invalid).
      expect([...inSource].filter((n) => !read.has(n))).toEqual([])
      for (const name of ["TELEGRAM_BOT_TOKEN", "PORT", "INBOX_RETENTION_HOURS"]) expect(inSource).toContain(name)
    }))

  it("documents every environment variable, and no other", () => {
    expect(checkEnvVars(doc, envVarsInSource())).toEqual(noDrift)
  })

  it("collects every callback data value of Messages.ts", () => {
    const templates = callbackTemplatesInSource()
    expect([...templates].map(canonicalData).sort()).toEqual(
      ["zimage:again:<>", "zimage:model:<>", "zimage:ratio:<>", "zimage:retry:<>", "zimage:start"]
    )
    // Whatever a keyboard carries was built from one of them.
    const patterns = [...templates].map(templatePattern)
    expect([...allCallbackData()].filter((d) => !patterns.some((p) => p.test(d)))).toEqual([])
    expect(fixedCallbackData().has("zimage:ratio:16:9")).toBe(true)
  })

  it("documents every callback data value, and no other", () => {
    expect(checkCallbackData(doc, callbackTemplatesInSource(), fixedCallbackData())).toEqual(noDrift)
  })

  it("documents every bot command, and no other", () => {
    expect(checkCommands(doc, commands)).toEqual(noDrift)
  })

  it("collects the log markers of src/", () => {
    const markers = markersInSource()
    // Markers operators have grepped for since the first deployment; they never change.
    for (const marker of ["[LOCK]", "[LOCK_CONTROLLER]", "[STATE_SYNC]", "[WORKER_n]", "[GEN]", "[DISPATCH]"]) {
      expect(markers).toContain(marker)
    }
    // `request.headers[SECRET_HEADER]` is an index, not a log line.
    expect(markers).not.toContain("[SECRET_HEADER]")
  })

  it("documents every log marker, and no other", () => {
    expect(checkMarkers(doc, markersInSource())).toEqual(noDrift)
  })

  it("documents every metric, and no other", () => {
    const metrics = metricsInSource()
    expect(metrics).toContain("zimage_queue_depth")
    expect(checkMetrics(doc, metrics)).toEqual(noDrift)
  })

  it("notices a row removed from the doc, or one the code no longer has", () => {
    const without = (row: string) => {
      const lines = doc.split("\n")
      const index = lines.findIndex((line) => line.startsWith(`| ${row} |`))
      expect(index).toBeGreaterThan(-1)
      return lines.filter((_, i) => i !== index).join("\n")
    }
    // `toContain`, not `toEqual`: a marker someone adds meanwhile must not make this test fail too.
    expect(checkEnvVars(without("`WORKERS`"), envVarsInSource()).undocumented).toContain("WORKERS")
    const withoutRetry = without("`zimage:retry:<id>`")
    expect(checkCallbackData(withoutRetry, callbackTemplatesInSource(), fixedCallbackData()).undocumented)
      .toContain("zimage:retry:<>")
    expect(checkCommands(without("`/cancel`"), commands).undocumented).toContain("/cancel")
    expect(checkMarkers(without("`[STATE_SYNC]`"), markersInSource()).undocumented).toContain("[STATE_SYNC]")
    expect(checkMetrics(without("`zimage_leader_active`"), metricsInSource()).undocumented)
      .toContain("zimage_leader_active")
    expect(checkHealth(without("`uptime_s`"), new Set(["status", "uptime_s"])).undocumented).toContain("uptime_s")
    expect(checkHealth(doc, new Set(["status"])).stale).toContain("uptime_s")
    expect(checkHealth(doc, new Set(["status"])).stale).not.toContain("kie_pause")

    const withMarkerGone = new Set([...markersInSource()].filter((m) => m !== "[HTTP]"))
    expect(checkMarkers(doc, withMarkerGone).stale).toContain("[HTTP]")
    const withVariableGone = new Set([...envVarsInSource()].filter((n) => n !== "KIE_NSFW_CHECKER"))
    expect(checkEnvVars(doc, withVariableGone).stale).toContain("KIE_NSFW_CHECKER")
  })
})

describe("docs/contract.md against a running app", () => {
  it.live("documents every /health field and /metrics series the app answers with", () =>
    Effect.gen(function*() {
      const fake = yield* FakeTelegram.make()
      const app = yield* startApp({ ...fake.env, DATABASE_URL: yield* freshDatabaseUrl })
      const body = (path: string) =>
        Effect.promise(() => fetch(`http://127.0.0.1:${app.port}${path}`).then((response) => response.text()))

      const fields = new Set(Object.keys(JSON.parse(yield* body("/health")) as Record<string, unknown>))
      expect(fields).toContain("queue_depth")
      expect(checkHealth(doc, fields)).toEqual(noDrift)

      const exposition = yield* body("/metrics")
      const series = new Set([...exposition.matchAll(/^# TYPE (zimage_[a-z0-9_]+) /gm)].map((m) => m[1]!))
      expect(series).toContain("zimage_leader_active")
      // Every series the app exports is one Metrics.ts declares, hence documented by the test above.
      expect([...series].filter((name) => !metricsInSource().has(name))).toEqual([])
    }), { timeout: 60_000 })
})
