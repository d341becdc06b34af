import { assert, describe, it } from "@effect/vitest"
import { Duration, Effect, Logger, Option, Redacted } from "effect"
import { lockKeyFromName, secretsOf, webhookSecretToken } from "../src/platform/AppConfig.ts"
import { makeLogger, makeRedactor } from "../src/platform/Logging.ts"
import { loadConfig, TEST_BOT_TOKEN, TEST_KIE_KEY } from "./support/TestConfig.ts"

const required = { TELEGRAM_BOT_TOKEN: TEST_BOT_TOKEN, KIE_API_KEY: TEST_KIE_KEY }

const failure = (env: Record<string, string>) => loadConfig(env).pipe(Effect.flip)

describe("AppConfig", () => {
  it.effect("applies the contract's defaults", () =>
    Effect.gen(function*() {
      const config = yield* loadConfig(required)
      assert.strictEqual(config.telegramApiRoot, "https://api.telegram.org")
      assert.isTrue(Option.isNone(config.publicUrl))
      assert.isTrue(Option.isNone(config.telegramWebhookSecret))
      assert.strictEqual(config.kieBaseUrl, "https://api.kie.ai")
      assert.isTrue(Option.isNone(config.kieWebhookHmacKey))
      assert.isTrue(Option.isNone(config.databaseUrl))
      assert.strictEqual(config.embeddedPgDir, ".data/pg")
      assert.strictEqual(config.port, 10000)
      assert.strictEqual(config.workers, 8)
      assert.strictEqual(config.singleModelOnly, true)
      assert.strictEqual(Duration.toMillis(config.kiePollInterval), 3000)
      assert.strictEqual(Duration.toMillis(config.kieRequestTimeout), 30000)
      assert.strictEqual(Duration.toMillis(config.generationTimeout), 300000)
      assert.strictEqual(config.kieCreateRate.count, 20)
      assert.strictEqual(Duration.toMillis(config.kieCreateRate.window), 10000)
      assert.strictEqual(config.logLevel, "info")
      assert.strictEqual(config.leaderLockKey, lockKeyFromName("zimage-bot/leader"))
      // Update pipeline
      assert.strictEqual(Duration.toMillis(config.telegramRequestTimeout), 30_000)
      assert.strictEqual(config.updateMaxAttempts, 5)
      assert.strictEqual(Duration.toMillis(config.updateHandlerTimeout), 60_000)
      assert.strictEqual(Duration.toMillis(config.stuckUpdateThreshold), 90_000)
      assert.strictEqual(Duration.toMillis(config.orphanUpdateThreshold), 60_000)
      assert.strictEqual(Duration.toMillis(config.reconcileInterval), 15_000)
      assert.strictEqual(Duration.toHours(config.inboxRetention), 168)
    }))

  it.effect("reads the update pipeline's variables and refuses a retention under two days", () =>
    Effect.gen(function*() {
      const config = yield* loadConfig({
        ...required,
        UPDATE_MAX_ATTEMPTS: "3",
        UPDATE_HANDLER_TIMEOUT_MS: "5000",
        STUCK_UPDATE_THRESHOLD_MS: "20000",
        ORPHAN_UPDATE_THRESHOLD_MS: "10000",
        RECONCILE_INTERVAL_MS: "1000",
        INBOX_RETENTION_HOURS: "72",
        TELEGRAM_REQUEST_TIMEOUT_MS: "9000"
      })
      assert.strictEqual(config.updateMaxAttempts, 3)
      assert.strictEqual(Duration.toMillis(config.updateHandlerTimeout), 5000)
      assert.strictEqual(Duration.toMillis(config.stuckUpdateThreshold), 20000)
      assert.strictEqual(Duration.toMillis(config.orphanUpdateThreshold), 10000)
      assert.strictEqual(Duration.toMillis(config.reconcileInterval), 1000)
      assert.strictEqual(Duration.toHours(config.inboxRetention), 72)
      assert.strictEqual(Duration.toMillis(config.telegramRequestTimeout), 9000)
      const error = yield* failure({ ...required, INBOX_RETENTION_HOURS: "24" })
      assert.strictEqual(error.variable, "INBOX_RETENTION_HOURS")
    }))

  it.effect("reads every contract variable", () =>
    Effect.gen(function*() {
      const config = yield* loadConfig({
        ...required,
        TELEGRAM_API_ROOT: "http://127.0.0.1:8081/",
        PUBLIC_URL: "https://bot.example.com/",
        TELEGRAM_WEBHOOK_SECRET: "s3cret_token-x-0123456789",
        KIE_BASE_URL: "http://127.0.0.1:8082",
        KIE_WEBHOOK_HMAC_KEY: "hmac-key-123",
        DATABASE_URL: "postgres://u:p@db.internal:5432/app",
        PORT: "8080",
        WORKERS: "3",
        SINGLE_MODEL_ONLY: "false",
        KIE_POLL_INTERVAL_MS: "1500",
        KIE_REQUEST_TIMEOUT_MS: "5000",
        GENERATION_TIMEOUT_MS: "60000",
        KIE_CREATE_RATE: "2/1s",
        LOG_LEVEL: "DEBUG",
        LOG_FORMAT: "pretty",
        LEADER_LOCK_KEY: "42"
      })
      assert.strictEqual(config.telegramApiRoot, "http://127.0.0.1:8081")
      assert.deepStrictEqual(config.publicUrl, Option.some("https://bot.example.com"))
      assert.strictEqual(
        Option.map(config.telegramWebhookSecret, Redacted.value).pipe(Option.getOrThrow),
        "s3cret_token-x-0123456789"
      )
      assert.strictEqual(config.kieBaseUrl, "http://127.0.0.1:8082")
      assert.strictEqual(config.port, 8080)
      assert.strictEqual(config.workers, 3)
      assert.strictEqual(config.singleModelOnly, false)
      assert.strictEqual(Duration.toMillis(config.kiePollInterval), 1500)
      assert.strictEqual(Duration.toMillis(config.kieRequestTimeout), 5000)
      assert.strictEqual(Duration.toMillis(config.generationTimeout), 60000)
      assert.strictEqual(config.kieCreateRate.count, 2)
      assert.strictEqual(Duration.toMillis(config.kieCreateRate.window), 1000)
      assert.strictEqual(config.logLevel, "debug")
      assert.strictEqual(config.logFormat, "pretty")
      assert.strictEqual(config.leaderLockKey, 42n)
    }))

  it.effect("falls back to RENDER_EXTERNAL_URL for PUBLIC_URL", () =>
    Effect.gen(function*() {
      const config = yield* loadConfig({
        ...required,
        RENDER_EXTERNAL_URL: "https://zimage.onrender.com",
        TELEGRAM_WEBHOOK_SECRET: "abcdefghijklmnop"
      })
      assert.deepStrictEqual(config.publicUrl, Option.some("https://zimage.onrender.com"))
    }))

  it.effect("treats blank variables as unset", () =>
    Effect.gen(function*() {
      const config = yield* loadConfig({ ...required, DATABASE_URL: "  ", PORT: "" })
      assert.isTrue(Option.isNone(config.databaseUrl))
      assert.strictEqual(config.port, 10000)
    }))

  it.effect.each(
    [
      ["TELEGRAM_BOT_TOKEN", { KIE_API_KEY: TEST_KIE_KEY }],
      ["KIE_API_KEY", { TELEGRAM_BOT_TOKEN: TEST_BOT_TOKEN }]
    ] as const
  )("a missing %s names the variable", ([variable, env]) =>
    Effect.gen(function*() {
      const error = yield* failure(env)
      assert.strictEqual(error._tag, "ConfigInvalid")
      assert.strictEqual(error.variable, variable)
      assert.include(error.message, `${variable} is required`)
    }))

  it.effect("webhook mode requires TELEGRAM_WEBHOOK_SECRET", () =>
    Effect.gen(function*() {
      const error = yield* failure({ ...required, PUBLIC_URL: "https://bot.example.com" })
      assert.strictEqual(error.variable, "TELEGRAM_WEBHOOK_SECRET")
    }))

  it.effect("webhook mode: PUBLIC_URL must be https except on loopback; the secret at least 16 characters", () =>
    Effect.gen(function*() {
      const secret = "0123456789abcdef"
      for (const url of ["http://127.0.0.1:8080", "http://localhost:3000/", "http://[::1]:9"]) {
        const config = yield* loadConfig({ ...required, PUBLIC_URL: url, TELEGRAM_WEBHOOK_SECRET: secret })
        assert.isTrue(Option.isSome(config.publicUrl), url)
      }
      for (
        const [variable, url] of [
          ["PUBLIC_URL", "http://bot.example.com"],
          ["PUBLIC_URL", "http://10.0.0.5:8080"],
          ["PUBLIC_URL", "http://127.0.0.1.example.com"],
          ["RENDER_EXTERNAL_URL", "http://zimage.onrender.com"]
        ] as const
      ) {
        const error = yield* failure({ ...required, [variable]: url, TELEGRAM_WEBHOOK_SECRET: secret })
        assert.strictEqual(error.variable, variable, url)
        assert.include(error.message, "https://")
        assert.notInclude(error.message, url)
      }
      const short = "fifteen_chars_x"
      assert.lengthOf(short, 15)
      for (const env of [{ PUBLIC_URL: "https://bot.example.com" }, {}]) {
        const error = yield* failure({ ...required, ...env, TELEGRAM_WEBHOOK_SECRET: short })
        assert.strictEqual(error.variable, "TELEGRAM_WEBHOOK_SECRET")
        assert.include(error.message, "at least 16 characters")
        assert.notInclude(error.message, short)
      }
    }))

  it.effect.each(
    [
      ["PORT", "abc"],
      ["PORT", "70000"],
      ["WORKERS", "0"],
      ["DATABASE_URL", "not a url"],
      ["DATABASE_URL", "mysql://u:hunter2@h/db"],
      ["PUBLIC_URL", "ftp://example.com"],
      ["KIE_CREATE_RATE", "fast"],
      ["SINGLE_MODEL_ONLY", "maybe"],
      ["LOG_FORMAT", "xml"],
      ["TELEGRAM_BOT_TOKEN", "not-a-token"]
    ] as const
  )("rejects %s=%s with a message that names it and hides the value", ([variable, value]) =>
    Effect.gen(function*() {
      const error = yield* failure({ ...required, TELEGRAM_WEBHOOK_SECRET: "x".repeat(16), [variable]: value })
      assert.strictEqual(error.variable, variable)
      assert.isTrue(error.message.startsWith(variable))
      assert.notInclude(error.message, value)
    }))

  it.effect("keeps secrets redacted in toString, JSON and logs", () =>
    Effect.gen(function*() {
      const config = yield* loadConfig({
        ...required,
        PUBLIC_URL: "https://bot.example.com",
        TELEGRAM_WEBHOOK_SECRET: "webhook_secret_value",
        DATABASE_URL: "postgres://bot:db-password-9@db:5432/app"
      })
      // oxlint-disable-next-line typescript/no-base-to-string -- what String() prints is exactly what is tested
      assert.strictEqual(String(config.telegramBotToken), "<redacted>")
      // oxlint-disable-next-line typescript/no-base-to-string -- as above
      assert.strictEqual(String(config.kieApiKey), "<redacted>")
      const json = JSON.stringify(config, (_, v) => (typeof v === "bigint" ? v.toString() : v))
      for (const secret of [TEST_BOT_TOKEN, TEST_KIE_KEY, "webhook_secret_value", "db-password-9"]) {
        assert.notInclude(json, secret)
      }

      const lines: Array<string> = []
      const logger = makeLogger({ format: "json", secrets: secretsOf(config), write: (l) => lines.push(l) })
      yield* Effect.logError(
        `request to https://api.telegram.org/bot${TEST_BOT_TOKEN}/getMe failed`,
        { key: TEST_KIE_KEY, header: "webhook_secret_value", url: "postgres://bot:db-password-9@db:5432/app" }
      ).pipe(Effect.provide(Logger.layer([logger])))
      yield* Effect.logWarning("pasted token", TEST_BOT_TOKEN.replace("bot", "")).pipe(
        Effect.provide(Logger.layer([logger]))
      )
      assert.strictEqual(lines.length, 2)
      for (const line of lines) {
        assert.notInclude(line, TEST_BOT_TOKEN.split(":")[1]!)
        assert.notInclude(line, TEST_KIE_KEY)
        assert.notInclude(line, "webhook_secret_value")
        assert.notInclude(line, "db-password-9")
        JSON.parse(line)
      }
      assert.include(lines[0]!, "bot<redacted>/getMe")
    }))

  it("derives a Telegram-safe secret_token from a base64 secret", () => {
    const generated = "q9X+/aB3=="
    const token = webhookSecretToken(generated)
    assert.match(token, /^[A-Za-z0-9_-]{1,256}$/)
    assert.strictEqual(webhookSecretToken(generated), token)
    assert.strictEqual(webhookSecretToken("already_valid-1"), "already_valid-1")
  })

  it("the redactor removes the bot token pattern even without knowing the token", () => {
    const redact = makeRedactor([])
    assert.strictEqual(
      redact("GET /bot987654:AAH-some_secret_part/sendMessage"),
      "GET /bot<redacted>/sendMessage"
    )
  })

  it.effect("SHUTDOWN_DEADLINE_MS: SHUTDOWN_TIMEOUT_MS + 10 s by default, and must be longer than it", () =>
    Effect.gen(function*() {
      const defaults = yield* loadConfig(required)
      assert.strictEqual(Duration.toMillis(defaults.shutdownTimeout), 20_000)
      assert.strictEqual(Duration.toMillis(defaults.shutdownDeadline), 30_000)
      const shorter = yield* loadConfig({ ...required, SHUTDOWN_TIMEOUT_MS: "5000" })
      assert.strictEqual(Duration.toMillis(shorter.shutdownDeadline), 15_000)
      const explicit = yield* loadConfig({ ...required, SHUTDOWN_TIMEOUT_MS: "5000", SHUTDOWN_DEADLINE_MS: "9000" })
      assert.strictEqual(Duration.toMillis(explicit.shutdownDeadline), 9_000)
      const error = yield* failure({ ...required, SHUTDOWN_TIMEOUT_MS: "5000", SHUTDOWN_DEADLINE_MS: "5000" })
      assert.strictEqual(error.variable, "SHUTDOWN_DEADLINE_MS")
    }))

  it.effect("the instance id comes from INSTANCE_ID, else RENDER_INSTANCE_ID (or the host name) and the pid", () =>
    Effect.gen(function*() {
      const render = yield* loadConfig({ ...required, RENDER_INSTANCE_ID: "srv-abc-123" })
      assert.strictEqual(render.instanceId, `srv-abc-123:${process.pid}`)
      const explicit = yield* loadConfig({ ...required, RENDER_INSTANCE_ID: "srv-abc-123", INSTANCE_ID: "bot-a" })
      assert.strictEqual(explicit.instanceId, "bot-a")
    }))
})
