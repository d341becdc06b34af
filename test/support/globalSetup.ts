/**
 * One PostgreSQL server for the whole test run: TEST_DATABASE_URL when set,
 * otherwise a throw-away embedded cluster in the system temp directory. Each
 * test file then creates its own database on it (see TestDatabase.ts).
 */
import { Effect, Exit, Scope } from "effect"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import type { TestProject } from "vitest/node"
import * as EmbeddedPostgres from "../../src/database/EmbeddedPostgres.ts"

declare module "vitest" {
  export interface ProvidedContext {
    /** URL of a database on the test server from which others can be created. */
    adminDatabaseUrl: string
  }
}

export default async function setup(project: TestProject) {
  const external = process.env.TEST_DATABASE_URL
  if (external !== undefined && external !== "") {
    project.provide("adminDatabaseUrl", external)
    return
  }
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "zimage-bot-test-"))
  // mkdtemp makes the directory 0700; the server may run as another OS user.
  fs.chmodSync(dir, 0o755)
  const scope = Effect.runSync(Scope.make())
  const server = await Effect.runPromise(
    EmbeddedPostgres.acquire({ dataDir: path.join(dir, "pg"), unsafeFast: true }).pipe(Scope.provide(scope))
  )
  project.provide("adminDatabaseUrl", server.urlFor("postgres"))
  return async () => {
    await Effect.runPromise(Scope.close(scope, Exit.void))
    fs.rmSync(dir, { recursive: true, force: true })
  }
}
