/**
 * Every setting of the service, read once at startup from the environment.
 *
 * The variable names and defaults of the public contract (`docs/contract.md`)
 * are fixed; the extra variables at the bottom have safe defaults. A missing or
 * malformed variable fails with one `ConfigInvalid` that names it and never
 * echoes its value, because several of them are secrets.
 */
import { Config, Context, Duration, Effect, Layer, Option, Redacted, Schema } from "effect"
import { createHash } from "node:crypto"
import { hostname } from "node:os"

export class ConfigInvalid extends Schema.TaggedError<ConfigInvalid>()("ConfigInvalid", {
  variable: Schema.String,
  message: Schema.String
}) {}

export type LogFormat = "json" | "pretty"
export type LogLevelName = "trace" | "debug" | "info" | "warn" | "error"

/** A createTask budget: at most `count` calls in any window of `window`. */
export interface RateBudget {
  readonly count: number
  readonly window: Duration.Duration
}

export interface AppConfigShape {
  // Telegram
  readonly telegramBotToken: Redacted.Redacted<string>
  readonly telegramApiRoot: string
  /** Base URL without a trailing slash; `None` means long-polling mode. */
  readonly publicUrl: Option.Option<string>
  /**
   * The `secret_token` sent to setWebhook and expected in
   * `X-Telegram-Bot-Api-Secret-Token`. Present whenever `publicUrl` is.
   */
  readonly telegramWebhookSecret: Option.Option<Redacted.Redacted<string>>
  // Kie.ai
  readonly kieApiKey: Redacted.Redacted<string>
  readonly kieBaseUrl: string
  readonly kieWebhookHmacKey: Option.Option<Redacted.Redacted<string>>
  readonly kiePollInterval: Duration.Duration
  readonly kieRequestTimeout: Duration.Duration
  readonly kieCreateRate: RateBudget
  /**
   * `input.nsfw_checker` sent with every createTask (KIE_NSFW_CHECKER, default
   * true). Kie's filter is off unless asked for, and a public bot takes prompts
   * from anyone, so it is on unless an operator turns it off.
   */
  readonly kieNsfwChecker: boolean
  readonly generationTimeout: Duration.Duration
  /**
   * Result URLs on loopback, private or link-local addresses are downloaded
   * (ALLOW_PRIVATE_RESULT_URLS, default false). They are also allowed,
   * whatever this says, when KIE_BASE_URL itself is on such an address.
   */
  readonly allowPrivateResultUrls: boolean
  // Database
  /** `None` means the embedded PostgreSQL in `embeddedPgDir`. */
  readonly databaseUrl: Option.Option<Redacted.Redacted<string>>
  readonly embeddedPgDir: string
  readonly databasePoolSize: number
  readonly databaseStartupTimeout: Duration.Duration
  // Service
  readonly port: number
  readonly httpHost: string
  readonly workers: number
  readonly singleModelOnly: boolean
  /**
   * Kie model ids offered for text-to-image, in button order (MODELS, default
   * `z-image`). Checked against the catalog at startup (`kie/ModelCatalog.ts`,
   * by `Launcher.ts`, since this module cannot see it).
   */
  readonly models: ReadonlyArray<string>
  /** The model a photo is edited with (EDIT_MODEL); `None` when editing is off. */
  readonly editModel: Option.Option<string>
  /** Kie's file upload API root (KIE_UPLOAD_BASE_URL), where a photo to edit is uploaded. */
  readonly kieUploadBaseUrl: string
  readonly logLevel: LogLevelName
  readonly logFormat: LogFormat
  readonly instanceId: string
  readonly leaderLockKey: bigint
  /** How long leader-only work (handlers, generations) may take to finish after SIGTERM. */
  readonly shutdownTimeout: Duration.Duration
  /**
   * Hard limit on the whole shutdown, counted from the signal: past it the
   * process logs one line and exits 1. Longer than `shutdownTimeout` (the
   * lock release and the pool close come after the drain); keep it below
   * Render's `maxShutdownDelaySeconds`, after which Render sends SIGKILL.
   */
  readonly shutdownDeadline: Duration.Duration
  // Chat flow
  readonly sendOriginalDocument: boolean
  readonly maxActiveGenerationsPerUser: number
  /** 0 means no daily limit. */
  readonly dailyGenerationLimit: number
  // Telegram update pipeline
  /** Bound on one Bot API call (long polling adds its own `timeout` on top). */
  readonly telegramRequestTimeout: Duration.Duration
  /** Pace sends to Telegram's flood limits (`telegram/SendGate.ts`); 429 pauses apply either way. */
  readonly telegramPacing: boolean
  /** Updates stored per chat, beyond which they are acknowledged and dropped (`inbox/FloodGate.ts`). */
  readonly floodChatRate: RateBudget
  /** Updates stored per user over all chats, likewise. */
  readonly floodUserRate: RateBudget
  /** Messages of one user in a chat answered one by one; beyond, one "too many messages" notice (`dispatch/FloodWatch.ts`). */
  readonly floodNoticeRate: RateBudget
  /** Handler runs per update before it is marked dead. */
  readonly updateMaxAttempts: number
  /** One handler run longer than this counts as a failed attempt. */
  readonly updateHandlerTimeout: Duration.Duration
  /**
   * A `processing` update claimed by an earlier leader and untouched for this
   * long goes back to `pending`. Keep it above `updateHandlerTimeout`.
   */
  readonly stuckUpdateThreshold: Duration.Duration
  /** A `pending` update older than this is logged as an orphan and dispatched. */
  readonly orphanUpdateThreshold: Duration.Duration
  readonly reconcileInterval: Duration.Duration
  /**
   * Finished updates are deleted after this long. At least two days, because
   * Telegram redelivers an update for up to 24 hours and the stored row is what
   * makes the redelivery a duplicate.
   */
  readonly inboxRetention: Duration.Duration
  // Cost control and retention
  /**
   * Generations all users together may start per UTC day (failed ones do not
   * count); 0 means no budget. A cap on what one day can cost, whoever asks.
   */
  readonly globalDailyGenerationLimit: number
  /**
   * ALLOWED_USER_IDS: the only Telegram users the bot serves (a private bot);
   * `None` (unset) means everyone.
   */
  readonly allowedUserIds: Option.Option<ReadonlySet<number>>
  /**
   * Finished generations (prompts, chat ids, result URLs) and chat sessions
   * untouched for this long are deleted. At least a day, so today's
   * generations, which the daily limits count, are never among them.
   */
  readonly generationRetention: Duration.Duration
}

// ---------------------------------------------------------------------------
// Parsing helpers. Each returns the parsed value or a human reason; the reason
// never contains the raw value.

type Parsed<A> = { readonly ok: true; readonly value: A } | { readonly ok: false; readonly reason: string }
const ok = <A>(value: A): Parsed<A> => ({ ok: true, value })
const bad = (reason: string): Parsed<never> => ({ ok: false, reason })

/** Reads a variable; unset and blank are the same thing (Render may set blanks). */
const raw = (name: string): Effect.Effect<Option.Option<string>> =>
  Config.option(Config.String(name)).pipe(
    Effect.map(Option.map((s) => s.trim())),
    Effect.map(Option.filter((s) => s.length > 0)),
    Effect.orElseSucceed(() => Option.none<string>())
  )

const decode = <A>(name: string, value: string, parse: (s: string) => Parsed<A>): Effect.Effect<A, ConfigInvalid> => {
  const result = parse(value)
  return result.ok
    ? Effect.succeed(result.value)
    : Effect.fail(new ConfigInvalid({ variable: name, message: `${name} ${result.reason}` }))
}

const optional = <A>(name: string, parse: (s: string) => Parsed<A>): Effect.Effect<Option.Option<A>, ConfigInvalid> =>
  Effect.flatMap(raw(name), (value) =>
    Option.match(value, {
      onNone: () => Effect.succeed(Option.none<A>()),
      onSome: (s) => Effect.map(decode(name, s, parse), Option.some)
    }))

const withDefault = <A>(name: string, fallback: A, parse: (s: string) => Parsed<A>): Effect.Effect<A, ConfigInvalid> =>
  Effect.map(optional(name, parse), Option.getOrElse(() => fallback))

const required = <A>(name: string, hint: string, parse: (s: string) => Parsed<A>): Effect.Effect<A, ConfigInvalid> =>
  Effect.flatMap(raw(name), (value) =>
    Option.match(value, {
      onNone: () => Effect.fail(new ConfigInvalid({ variable: name, message: `${name} is required (${hint})` })),
      onSome: (s) => decode(name, s, parse)
    }))

export const parseInteger = (min: number, max: number) => (s: string): Parsed<number> => {
  if (!/^-?\d+$/.test(s)) return bad(`must be a whole number between ${min} and ${max}`)
  const n = Number(s)
  return n >= min && n <= max ? ok(n) : bad(`must be a whole number between ${min} and ${max}`)
}

const parseMillis = (min: number, max: number) => (s: string): Parsed<Duration.Duration> => {
  const n = parseInteger(min, max)(s)
  return n.ok ? ok(Duration.millis(n.value)) : bad(`must be a number of milliseconds between ${min} and ${max}`)
}

export const parseBoolean = (s: string): Parsed<boolean> => {
  const v = s.toLowerCase()
  if (["true", "1", "yes", "on"].includes(v)) return ok(true)
  if (["false", "0", "no", "off"].includes(v)) return ok(false)
  return bad("must be true or false")
}

/** An http(s) URL; returned without a trailing slash so paths can be appended. */
export const parseHttpUrl = (s: string): Parsed<string> => {
  let url: URL
  try {
    url = new URL(s)
  } catch {
    return bad("must be an absolute http:// or https:// URL")
  }
  if (url.protocol !== "http:" && url.protocol !== "https:") {
    return bad("must be an absolute http:// or https:// URL")
  }
  if (url.search !== "" || url.hash !== "") return bad("must not contain a query string or fragment")
  return ok(url.href.replace(/\/+$/, ""))
}

/**
 * `123,456 789`: Telegram user ids separated by commas or spaces. The reason
 * names no id (the list is not a secret, but it is nobody else's business).
 */
export const parseUserIds = (s: string): Parsed<ReadonlySet<number>> => {
  const parts = s.split(/[\s,]+/).filter((part) => part.length > 0)
  const ids = parts.filter((part) => /^\d{1,16}$/.test(part)).map(Number).filter((n) => n > 0)
  if (parts.length === 0 || ids.length !== parts.length) {
    return bad("must be a comma-separated list of Telegram user ids (positive whole numbers)")
  }
  return ok(new Set(ids))
}

const secret = (s: string): Parsed<Redacted.Redacted<string>> => ok(Redacted.make(s))

/** Hosts where plain http is fine for PUBLIC_URL: the traffic never leaves the machine. */
const LOOPBACK_HOSTS: ReadonlyArray<string> = ["127.0.0.1", "localhost", "[::1]"]

/**
 * PUBLIC_URL (or RENDER_EXTERNAL_URL): https, because Telegram sends the
 * webhook secret and Kie sends results to it; plain http only on loopback
 * (local runs, tests, the sandbox).
 */
export const parsePublicUrl = (s: string): Parsed<string> => {
  const parsed = parseHttpUrl(s)
  if (!parsed.ok) return parsed
  const url = new URL(parsed.value)
  return url.protocol === "https:" || LOOPBACK_HOSTS.includes(url.hostname)
    ? parsed
    : bad("must be an https:// URL (plain http:// only for 127.0.0.1, localhost or [::1])")
}

/** The shortest TELEGRAM_WEBHOOK_SECRET accepted: anything shorter is guessable. */
export const MIN_WEBHOOK_SECRET_LENGTH = 16

/** TELEGRAM_WEBHOOK_SECRET: at least `MIN_WEBHOOK_SECRET_LENGTH` characters. */
export const parseWebhookSecret = (s: string): Parsed<Redacted.Redacted<string>> =>
  s.length >= MIN_WEBHOOK_SECRET_LENGTH
    ? ok(Redacted.make(s))
    : bad(`must be at least ${MIN_WEBHOOK_SECRET_LENGTH} characters long (a random value, e.g. Render's generateValue)`)

const MODEL_ID = /^[a-z0-9][a-z0-9._/-]{0,50}$/i

/** `z-image, google/nano-banana` → the ids, in order, without repeats; at least one. */
export const parseModelIds = (s: string): Parsed<ReadonlyArray<string>> => {
  const ids = [...new Set(s.split(",").map((part) => part.trim()).filter((part) => part.length > 0))]
  return ids.length > 0 && ids.every((id) => MODEL_ID.test(id))
    ? ok(ids)
    : bad("must be a comma-separated list of Kie model ids (e.g. z-image,google/nano-banana)")
}

/**
 * EDIT_MODEL: unset means `google/nano-banana-edit`; `off`, or set to empty
 * in the process environment, turns editing off. The one variable where "set
 * but empty" differs from unset (the contract says so); Effect's config
 * reads an empty value as missing, hence the look at `process.env` itself.
 */
const editModelSetting: Effect.Effect<Option.Option<string>, ConfigInvalid> = Effect.gen(function*() {
  const value = yield* raw("EDIT_MODEL")
  if (Option.isNone(value)) {
    const setEmpty = process.env.EDIT_MODEL !== undefined && process.env.EDIT_MODEL.trim() === ""
    return setEmpty ? Option.none() : Option.some("google/nano-banana-edit")
  }
  if (value.value.toLowerCase() === "off") return Option.none()
  return yield* decode(
    "EDIT_MODEL",
    value.value,
    (s) =>
      MODEL_ID.test(s) ? ok(Option.some(s)) : bad("must be one Kie model id, or empty (or off) to turn editing off")
  )
})

/** `123456:ABC-def_...`, as issued by @BotFather. */
export const parseBotToken = (s: string): Parsed<Redacted.Redacted<string>> =>
  /^\d+:[A-Za-z0-9_-]+$/.test(s)
    ? ok(Redacted.make(s))
    : bad("does not look like a bot token from @BotFather (<digits>:<letters, digits, _ or ->)")

export const parseDatabaseUrl = (s: string): Parsed<Redacted.Redacted<string>> => {
  let url: URL
  try {
    url = new URL(s)
  } catch {
    return bad("is not a valid URL (expected postgres://user:password@host:5432/database)")
  }
  if (url.protocol !== "postgres:" && url.protocol !== "postgresql:") {
    return bad("must start with postgres:// or postgresql://")
  }
  if (url.hostname === "" && !url.searchParams.has("host")) {
    return bad("has no host (expected postgres://user:password@host:5432/database)")
  }
  if (url.port !== "") {
    const port = Number(url.port)
    if (!Number.isInteger(port) || port < 1 || port > 65535) return bad("has an invalid port")
  }
  return ok(Redacted.make(s))
}

const units: Record<string, number> = { ms: 1, s: 1000, sec: 1000, m: 60_000, min: 60_000, h: 3_600_000 }

/** `20/10s`, `2/1s`, `100/1m`: a count per window. */
export const parseRate = (s: string): Parsed<RateBudget> => {
  const match = /^(\d+)\s*\/\s*(\d+(?:\.\d+)?)?\s*(ms|s|sec|m|min|h)$/.exec(s.toLowerCase())
  if (match === null) return bad("must look like 20/10s (calls per window; units ms, s, m, h)")
  const count = Number(match[1])
  const amount = match[2] === undefined ? 1 : Number(match[2])
  const millis = amount * units[match[3]!]!
  if (count < 1 || count > 10_000 || millis < 1) return bad("must allow at least 1 call in a window longer than 0")
  return ok({ count, window: Duration.millis(millis) })
}

export const parseLogLevel = (s: string): Parsed<LogLevelName> => {
  const v = s.toLowerCase()
  const aliases: Record<string, LogLevelName> = {
    trace: "trace",
    debug: "debug",
    info: "info",
    warn: "warn",
    warning: "warn",
    error: "error"
  }
  const level = aliases[v]
  return level === undefined ? bad("must be one of trace, debug, info, warn, error") : ok(level)
}

export const parseLogFormat = (s: string): Parsed<LogFormat> => {
  const v = s.toLowerCase()
  return v === "json" || v === "pretty" ? ok(v) : bad("must be json or pretty")
}

/** Accepts a signed 64-bit integer, or any other text which is hashed to one. */
export const parseLockKey = (s: string): Parsed<bigint> => {
  if (/^-?\d+$/.test(s)) {
    const n = BigInt(s)
    return n >= -(2n ** 63n) && n < 2n ** 63n ? ok(n) : bad("must fit in a signed 64-bit integer")
  }
  return ok(lockKeyFromName(s))
}

/** A stable signed 64-bit advisory-lock key derived from a name. */
export const lockKeyFromName = (name: string): bigint =>
  BigInt.asIntN(64, BigInt("0x" + createHash("sha256").update(name).digest("hex").slice(0, 16)))

/**
 * Telegram accepts a `secret_token` of 1–256 characters from `A-Za-z0-9_-`.
 * Render's `generateValue` yields base64 (with `+`, `/`, `=`), so any other
 * value is turned into a valid token by hashing it; both setWebhook and the
 * header check use the same derived token.
 */
export const webhookSecretToken = (secretValue: string): string =>
  /^[A-Za-z0-9_-]{1,256}$/.test(secretValue)
    ? secretValue
    : createHash("sha256").update(secretValue).digest("base64url")

/**
 * Default SHUTDOWN_DEADLINE_MS = SHUTDOWN_TIMEOUT_MS + this: after the drain,
 * the leader lock's release takes at most ~5 s (unlock and announce, 2 s each,
 * then the socket closes) and the pool and the HTTP server close in well under
 * a second; the rest is slack.
 */
export const SHUTDOWN_DEADLINE_MARGIN = Duration.seconds(10)

// ---------------------------------------------------------------------------

export class AppConfig extends Context.Service<AppConfig, AppConfigShape>()("zimage-bot/AppConfig") {
  static readonly load: Effect.Effect<AppConfigShape, ConfigInvalid> = Effect.gen(function*() {
    const telegramBotToken = yield* required("TELEGRAM_BOT_TOKEN", "the bot token from @BotFather", parseBotToken)
    const kieApiKey = yield* required("KIE_API_KEY", "the API key from kie.ai/api-key", secret)

    const explicitPublicUrl = yield* optional("PUBLIC_URL", parsePublicUrl)
    const publicUrl = Option.isSome(explicitPublicUrl)
      ? explicitPublicUrl
      : yield* optional("RENDER_EXTERNAL_URL", parsePublicUrl)
    const rawWebhookSecret = yield* optional("TELEGRAM_WEBHOOK_SECRET", parseWebhookSecret)
    if (Option.isSome(publicUrl) && Option.isNone(rawWebhookSecret)) {
      return yield* new ConfigInvalid({
        variable: "TELEGRAM_WEBHOOK_SECRET",
        message: "TELEGRAM_WEBHOOK_SECRET is required in webhook mode (PUBLIC_URL or RENDER_EXTERNAL_URL is set)"
      })
    }
    const telegramWebhookSecret = Option.map(
      rawWebhookSecret,
      (s) => Redacted.make(webhookSecretToken(Redacted.value(s)))
    )

    const port = yield* withDefault("PORT", 10000, parseInteger(0, 65535))
    const shutdownTimeout = yield* withDefault("SHUTDOWN_TIMEOUT_MS", Duration.seconds(20), parseMillis(0, 300_000))
    const shutdownDeadline = yield* withDefault(
      "SHUTDOWN_DEADLINE_MS",
      Duration.sum(shutdownTimeout, SHUTDOWN_DEADLINE_MARGIN),
      parseMillis(1, 600_000)
    )
    if (!Duration.isGreaterThan(shutdownDeadline, shutdownTimeout)) {
      return yield* new ConfigInvalid({
        variable: "SHUTDOWN_DEADLINE_MS",
        message: "SHUTDOWN_DEADLINE_MS must be greater than SHUTDOWN_TIMEOUT_MS (the lock release and the pool close " +
          "come after the drain)"
      })
    }

    // Read through the ConfigProvider like everything else (Render sets RENDER_INSTANCE_ID).
    const renderInstanceId = yield* optional("RENDER_INSTANCE_ID", ok)
    const instanceId = Option.getOrElse(
      yield* optional("INSTANCE_ID", ok),
      () => `${Option.getOrElse(renderInstanceId, () => hostname())}:${process.pid}`
    )

    return {
      telegramBotToken,
      telegramApiRoot: yield* withDefault("TELEGRAM_API_ROOT", "https://api.telegram.org", parseHttpUrl),
      publicUrl,
      telegramWebhookSecret,
      kieApiKey,
      kieBaseUrl: yield* withDefault("KIE_BASE_URL", "https://api.kie.ai", parseHttpUrl),
      kieWebhookHmacKey: yield* optional("KIE_WEBHOOK_HMAC_KEY", secret),
      kiePollInterval: yield* withDefault("KIE_POLL_INTERVAL_MS", Duration.seconds(3), parseMillis(100, 600_000)),
      kieRequestTimeout: yield* withDefault(
        "KIE_REQUEST_TIMEOUT_MS",
        Duration.seconds(30),
        parseMillis(100, 600_000)
      ),
      kieCreateRate: yield* withDefault("KIE_CREATE_RATE", { count: 20, window: Duration.seconds(10) }, parseRate),
      kieNsfwChecker: yield* withDefault("KIE_NSFW_CHECKER", true, parseBoolean),
      generationTimeout: yield* withDefault(
        "GENERATION_TIMEOUT_MS",
        Duration.minutes(5),
        parseMillis(1_000, 86_400_000)
      ),
      allowPrivateResultUrls: yield* withDefault("ALLOW_PRIVATE_RESULT_URLS", false, parseBoolean),
      databaseUrl: yield* optional("DATABASE_URL", parseDatabaseUrl),
      embeddedPgDir: yield* withDefault("EMBEDDED_PG_DIR", ".data/pg", ok),
      databasePoolSize: yield* withDefault("DATABASE_POOL_SIZE", 10, parseInteger(2, 200)),
      databaseStartupTimeout: yield* withDefault(
        "DATABASE_STARTUP_TIMEOUT_MS",
        Duration.seconds(60),
        parseMillis(0, 3_600_000)
      ),
      port,
      httpHost: yield* withDefault("HOST", "0.0.0.0", ok),
      workers: yield* withDefault("WORKERS", 8, parseInteger(1, 256)),
      singleModelOnly: yield* withDefault("SINGLE_MODEL_ONLY", true, parseBoolean),
      models: yield* withDefault("MODELS", ["z-image"], parseModelIds),
      editModel: yield* editModelSetting,
      kieUploadBaseUrl: yield* withDefault("KIE_UPLOAD_BASE_URL", "https://kieai.redpandaai.co", parseHttpUrl),
      logLevel: yield* withDefault("LOG_LEVEL", "info", parseLogLevel),
      logFormat: yield* withDefault("LOG_FORMAT", process.stdout.isTTY ? "pretty" : "json", parseLogFormat),
      instanceId,
      leaderLockKey: yield* withDefault("LEADER_LOCK_KEY", lockKeyFromName("zimage-bot/leader"), parseLockKey),
      shutdownTimeout,
      shutdownDeadline,
      sendOriginalDocument: yield* withDefault("SEND_ORIGINAL_DOCUMENT", true, parseBoolean),
      maxActiveGenerationsPerUser: yield* withDefault("MAX_ACTIVE_GENERATIONS_PER_USER", 1, parseInteger(1, 100)),
      dailyGenerationLimit: yield* withDefault("DAILY_GENERATION_LIMIT", 30, parseInteger(0, 100_000)),
      telegramRequestTimeout: yield* withDefault(
        "TELEGRAM_REQUEST_TIMEOUT_MS",
        Duration.seconds(30),
        parseMillis(1_000, 300_000)
      ),
      telegramPacing: yield* withDefault("TELEGRAM_PACING", true, parseBoolean),
      floodChatRate: yield* withDefault("FLOOD_CHAT_RATE", { count: 60, window: Duration.minutes(1) }, parseRate),
      floodUserRate: yield* withDefault("FLOOD_USER_RATE", { count: 30, window: Duration.minutes(1) }, parseRate),
      floodNoticeRate: yield* withDefault("FLOOD_NOTICE_RATE", { count: 6, window: Duration.seconds(10) }, parseRate),
      updateMaxAttempts: yield* withDefault("UPDATE_MAX_ATTEMPTS", 5, parseInteger(1, 100)),
      updateHandlerTimeout: yield* withDefault(
        "UPDATE_HANDLER_TIMEOUT_MS",
        Duration.seconds(60),
        parseMillis(100, 3_600_000)
      ),
      stuckUpdateThreshold: yield* withDefault(
        "STUCK_UPDATE_THRESHOLD_MS",
        Duration.seconds(90),
        parseMillis(1_000, 86_400_000)
      ),
      orphanUpdateThreshold: yield* withDefault(
        "ORPHAN_UPDATE_THRESHOLD_MS",
        Duration.seconds(60),
        parseMillis(1_000, 86_400_000)
      ),
      reconcileInterval: yield* withDefault(
        "RECONCILE_INTERVAL_MS",
        Duration.seconds(15),
        parseMillis(100, 3_600_000)
      ),
      inboxRetention: yield* withDefault(
        "INBOX_RETENTION_HOURS",
        Duration.hours(24 * 7),
        (s) => {
          const n = parseInteger(48, 24 * 365)(s)
          return n.ok ? ok(Duration.hours(n.value)) : bad("must be a number of hours between 48 and 8760")
        }
      ),
      globalDailyGenerationLimit: yield* withDefault(
        "GLOBAL_DAILY_GENERATION_LIMIT",
        1000,
        parseInteger(0, 10_000_000)
      ),
      allowedUserIds: yield* optional("ALLOWED_USER_IDS", parseUserIds),
      generationRetention: yield* withDefault("GENERATION_RETENTION_DAYS", Duration.days(30), (s) => {
        const n = parseInteger(1, 3650)(s)
        return n.ok ? ok(Duration.days(n.value)) : bad("must be a number of days between 1 and 3650")
      })
    } satisfies AppConfigShape
  })

  /** Reads the configuration from the current `ConfigProvider` (the environment by default). */
  static readonly layer = Layer.effect(AppConfig, AppConfig.load)

  /** For tests: a fixed configuration, nothing read from the environment. */
  static readonly layerWith = (shape: AppConfigShape) => Layer.succeed(AppConfig, shape)
}

/** The secrets of a configuration, for the log redactor. */
export const secretsOf = (config: AppConfigShape): ReadonlyArray<string> => {
  const values = [Redacted.value(config.telegramBotToken), Redacted.value(config.kieApiKey)]
  for (const s of [config.telegramWebhookSecret, config.kieWebhookHmacKey, config.databaseUrl]) {
    if (Option.isSome(s)) values.push(Redacted.value(s.value))
  }
  const databasePassword = Option.flatMap(config.databaseUrl, (url) => {
    try {
      return Option.some(decodeURIComponent(new URL(Redacted.value(url)).password)).pipe(
        Option.filter((p) => p.length > 0)
      )
    } catch {
      return Option.none()
    }
  })
  if (Option.isSome(databasePassword)) values.push(databasePassword.value)
  return values
}
