/**
 * `render.yaml`, read the way Render reads it, and the configuration the
 * service would load from the environment Render builds from it: the bot
 * starts in webhook mode on Render's external URL, with a generated secret,
 * on the database's direct connection string, and its shutdown fits in
 * Render's shutdown delay.
 */
import { assert, describe, it } from "@effect/vitest"
import { Duration, Effect, Option, Redacted, Schema } from "effect"
import { randomBytes } from "node:crypto"
import { readFileSync } from "node:fs"
import { parse } from "yaml"
import { loadConfig, TEST_BOT_TOKEN, TEST_KIE_KEY } from "./support/TestConfig.ts"

const root = new URL("../", import.meta.url)
const read = (file: string) => readFileSync(new URL(file, root), "utf8")

const EnvVar = Schema.Union([
  Schema.Struct({ key: Schema.String, value: Schema.String }),
  Schema.Struct({ key: Schema.String, generateValue: Schema.Literal(true) }),
  Schema.Struct({ key: Schema.String, sync: Schema.Literal(false) }),
  Schema.Struct({
    key: Schema.String,
    fromDatabase: Schema.Struct({ name: Schema.String, property: Schema.String })
  })
])
type EnvVar = typeof EnvVar.Type

const Service = Schema.Struct({
  type: Schema.String,
  name: Schema.String,
  runtime: Schema.String,
  plan: Schema.String,
  numInstances: Schema.Int,
  region: Schema.String,
  buildCommand: Schema.String,
  startCommand: Schema.String,
  healthCheckPath: Schema.String,
  maxShutdownDelaySeconds: Schema.Int,
  envVars: Schema.Array(EnvVar)
})

const Database = Schema.Struct({
  name: Schema.String,
  plan: Schema.String,
  region: Schema.String,
  postgresMajorVersion: Schema.String,
  databaseName: Schema.String,
  user: Schema.String,
  ipAllowList: Schema.Array(Schema.Unknown)
})

const Blueprint = Schema.Struct({
  services: Schema.Tuple([Service]),
  databases: Schema.Tuple([Database])
})

const blueprint = Schema.decodeUnknownSync(Blueprint)(parse(read("render.yaml")))
const [service] = blueprint.services
const [database] = blueprint.databases

const envVar = (key: string): EnvVar => {
  const found = service.envVars.filter((v) => v.key === key)
  assert.lengthOf(found, 1, `render.yaml sets ${key} once`)
  return found[0]!
}

/** What Render generates for `generateValue: true`: a base64-encoded 256-bit value. */
const generatedValue = (bytes: Buffer = randomBytes(32)) => bytes.toString("base64")

/**
 * The environment Render gives the service: the Blueprint's literal values,
 * the generated secret, the database's internal connection string, the
 * values pasted for `sync: false`, and Render's own variables.
 */
const renderEnvironment = (generated: string): Record<string, string> => {
  const env: Record<string, string> = {
    RENDER: "true",
    RENDER_EXTERNAL_URL: "https://zimage-bot.onrender.com",
    RENDER_INSTANCE_ID: "srv-d1abcdefghijklmnopqr-5f6c7d8e9-x2b4z",
    PORT: "10000"
  }
  const pasted: Record<string, string> = { TELEGRAM_BOT_TOKEN: TEST_BOT_TOKEN, KIE_API_KEY: TEST_KIE_KEY }
  for (const v of service.envVars) {
    if ("value" in v) env[v.key] = v.value
    else if ("generateValue" in v) env[v.key] = generated
    // An internal URL as Render shows it: host without domain, no port.
    else if ("fromDatabase" in v) {
      env[v.key] =
        `postgresql://${database.user}:Xk9fQ2pL7vRt3wYz8bNc@dpg-d1abcdefghijklmnopqr-a/${database.databaseName}`
    } else if (pasted[v.key] !== undefined) env[v.key] = pasted[v.key]!
    // An optional prompted value left empty (KIE_WEBHOOK_HMAC_KEY): Render sets it blank.
    else env[v.key] = ""
  }
  return env
}

describe("render.yaml", () => {
  it("a Node web service: build installs devDependencies and bundles, start runs the bundle, /health, Node 24", () => {
    assert.strictEqual(service.type, "web")
    assert.strictEqual(service.runtime, "node")
    assert.strictEqual(service.buildCommand, "npm ci --include=dev && npm run build")
    assert.strictEqual(envVar("NODE_ENV").key, "NODE_ENV")
    assert.strictEqual(service.startCommand, "npm run start:dist")
    assert.strictEqual(service.healthCheckPath, "/health")
    const pkg = JSON.parse(read("package.json"))
    // `exec`: npm's shell is replaced by node, so Render's SIGTERM reaches the service.
    assert.strictEqual(pkg.scripts.start, "exec node src/main.ts")
    assert.match(pkg.scripts["start:dist"], /^exec node .*dist\/main\.js$/)
    assert.strictEqual(pkg.scripts.build, "node scripts/build.ts")
    // Node 24: Render reads .node-version; npm scripts run the `node` devDependency.
    assert.strictEqual(read(".node-version").trim(), "24")
    assert.match(pkg.devDependencies.node, /^24\./)
    assert.isFalse(service.envVars.some((v) => v.key === "NODE_VERSION"), "one place says the Node version")
  })

  it("two instances (HA) on a plan that can scale, in the database's region", () => {
    assert.strictEqual(service.numInstances, 2)
    assert.notStrictEqual(service.plan, "free", "free services cannot run more than one instance")
    assert.strictEqual(service.region, database.region, "the internal connection string works only in one region")
    assert.deepStrictEqual(database.ipAllowList, [], "no access from outside Render")
  })

  it("DATABASE_URL is the managed database's direct connection string", () => {
    assert.deepStrictEqual(envVar("DATABASE_URL"), {
      key: "DATABASE_URL",
      fromDatabase: { name: database.name, property: "connectionString" }
    })
  })

  it("secrets: the webhook secret is generated, the token and keys are prompted, PUBLIC_URL comes from Render", () => {
    assert.deepStrictEqual(envVar("TELEGRAM_WEBHOOK_SECRET"), { key: "TELEGRAM_WEBHOOK_SECRET", generateValue: true })
    for (const key of ["TELEGRAM_BOT_TOKEN", "KIE_API_KEY", "KIE_WEBHOOK_HMAC_KEY"]) {
      assert.deepStrictEqual(envVar(key), { key, sync: false })
    }
    // Render sets RENDER_EXTERNAL_URL on web services and a Blueprint cannot
    // name its own URL: an entry here could only shadow it.
    assert.isFalse(service.envVars.some((v) => v.key === "PUBLIC_URL"))
    const literal = service.envVars.flatMap((v) => ("value" in v ? [v.value] : []))
    assert.isFalse(literal.some((value) => /token|key|secret|password/i.test(value)), "no secret in the file")
  })

  it.effect("the environment Render builds loads in webhook mode on RENDER_EXTERNAL_URL", () =>
    Effect.gen(function*() {
      // Render's base64 includes + / =, which Telegram refuses in a secret_token.
      for (const generated of [
        generatedValue(),
        generatedValue(Buffer.alloc(32, 0xfb)),
        generatedValue(Buffer.alloc(32, 0xff))
      ]) {
        const env = renderEnvironment(generated)
        const config = yield* loadConfig(env)
        assert.deepStrictEqual(config.publicUrl, Option.some("https://zimage-bot.onrender.com"))
        const token = Redacted.value(Option.getOrThrow(config.telegramWebhookSecret))
        assert.match(token, /^[A-Za-z0-9_-]{1,256}$/, "a secret_token Telegram accepts")
        assert.notStrictEqual(token, generated)
        assert.isTrue(Option.isSome(config.databaseUrl), "an external database, not the embedded one")
        assert.isTrue(Option.isNone(config.kieWebhookHmacKey), "an HMAC key left empty is unset")
        assert.strictEqual(config.port, 10000)
        assert.strictEqual(config.httpHost, "0.0.0.0")
        assert.include(config.instanceId, "srv-d1abcdefghijklmnopqr-5f6c7d8e9-x2b4z")
        assert.strictEqual(config.logFormat, "json")
      }
      assert.include(generatedValue(Buffer.alloc(32, 0xfb)), "+")
      assert.include(generatedValue(Buffer.alloc(32, 0xff)), "/")
      // Two deployments with different generated secrets get different tokens.
      const a = yield* loadConfig(renderEnvironment(generatedValue()))
      const b = yield* loadConfig(renderEnvironment(generatedValue()))
      assert.notStrictEqual(
        Redacted.value(Option.getOrThrow(a.telegramWebhookSecret)),
        Redacted.value(Option.getOrThrow(b.telegramWebhookSecret))
      )
    }))

  it.effect("the shutdown budget: drain < hard deadline < Render's SIGKILL", () =>
    Effect.gen(function*() {
      const config = yield* loadConfig(renderEnvironment(generatedValue()))
      const drain = Duration.toMillis(config.shutdownTimeout)
      const deadline = Duration.toMillis(config.shutdownDeadline)
      const kill = service.maxShutdownDelaySeconds * 1000
      assert.isAtMost(service.maxShutdownDelaySeconds, 300, "Render's maximum")
      // After the drain: unlock and announce (2 s each at most), then the pool closes.
      assert.isAtLeast(deadline - drain, 5_000)
      // The process must have ended, even by its own deadline, before Render kills it.
      assert.isAtLeast(kill - deadline, 5_000)
    }))
})
