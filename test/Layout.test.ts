/**
 * Keeps the folders of `src/` in the layers the README's layout section
 * describes: a module imports only from folders below its own in `LAYERS`,
 * so the dependencies between folders run one way and never form a cycle.
 * The composition files at the top of `src/` (`App.ts`, `main.ts`,
 * `Launcher.ts`, `Migrations.ts`, `LeaderServices.ts`) may import anything,
 * and nothing in a folder imports them.
 *
 * Imports are read from the syntax tree (rolldown's parser), so a path in a
 * comment or a string does not count.
 */
import { describe, expect, it } from "@effect/vitest"
import { readdirSync, readFileSync } from "node:fs"
import { dirname, join, normalize, relative } from "node:path"
import { parseAst } from "rolldown/parseAst"

/** Lowest first: each folder may import only from the folders before it. */
const LAYERS = [
  "platform",
  "database",
  "observability",
  "texts",
  "media",
  "telegram",
  "leadership",
  "kie",
  "inbox",
  "intake",
  "dispatch",
  "generations",
  "chat",
  "engine"
] as const

interface Edge {
  readonly file: string
  readonly from: string
  readonly to: string
}

const SRC = "src"

const sourceFiles = (dir: string): Array<string> =>
  readdirSync(dir, { withFileTypes: true }).flatMap((entry) => {
    const path = join(dir, entry.name)
    if (entry.isDirectory()) return sourceFiles(path)
    return path.endsWith(".ts") ? [path] : []
  })

/** `src/inbox/sql/claim.ts` → `inbox`; a file at the top of `src/` → `(root)`. */
const folderOf = (path: string): string => {
  const parts = relative(SRC, path).split("/")
  return parts.length === 1 ? "(root)" : parts[0]!
}

/** Relative imports and re-exports of one file, resolved to paths under the repository. */
const importsOf = (file: string): Array<string> => {
  const program = parseAst(readFileSync(file, "utf8"), { lang: "ts" }, file)
  const specifiers: Array<string> = []
  for (const node of program.body) {
    const source = (node as { source?: { value?: unknown } | null }).source
    if (typeof source?.value === "string" && source.value.startsWith(".")) specifiers.push(source.value)
  }
  return specifiers.map((specifier) => normalize(join(dirname(file), specifier)))
}

const edges = (): Array<Edge> =>
  sourceFiles(SRC).flatMap((file) =>
    importsOf(file)
      .filter((target) => target.startsWith(`${SRC}/`))
      .map((target) => ({ file, from: folderOf(file), to: folderOf(target) }))
      .filter((edge) => edge.from !== edge.to)
  )

/** The imports that go against `LAYERS` (or touch a folder it does not list). */
const violations = (all: ReadonlyArray<Edge>, layers: ReadonlyArray<string>): Array<string> =>
  all.flatMap((edge) => {
    if (edge.from === "(root)") return []
    if (edge.to === "(root)") return [`${edge.file} imports a composition file at the top of src/`]
    const from = layers.indexOf(edge.from)
    const to = layers.indexOf(edge.to)
    if (from === -1) return [`${edge.file}: folder ${edge.from} is not in LAYERS`]
    if (to === -1) return [`${edge.file}: folder ${edge.to} is not in LAYERS`]
    return to < from ? [] : [`${edge.file}: ${edge.from} imports ${edge.to}, which is not below it`]
  })

describe("layout of src/", () => {
  it("every folder imports only from the folders below it", () => {
    const all = edges()
    // The reader really found the cross-folder imports (a broken reader would pass vacuously).
    expect(all.length).toBeGreaterThan(100)
    expect(all).toContainEqual({ file: "src/engine/Submission.ts", from: "engine", to: "kie" })
    expect(violations(all, LAYERS)).toEqual([])
  })

  it("every folder of src/ has its place in the layers", () => {
    const folders = readdirSync(SRC, { withFileTypes: true }).filter((e) => e.isDirectory()).map((e) => e.name)
    expect([...folders].sort()).toEqual([...LAYERS].sort())
  })

  it("an import up the layers is caught", () => {
    const all = edges()
    // Swapping two layers that depend on each other one way turns their imports into violations.
    const swapped = LAYERS.map((name) => (name === "engine" ? "kie" : name === "kie" ? "engine" : name))
    expect(
      violations(all, swapped).some((line) =>
        line.includes("kie imports engine") || line.includes("engine imports kie")
      )
    )
      .toBe(true)
  })
})
