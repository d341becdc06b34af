/**
 * Logging: one JSON object per line in production, a readable line in a
 * terminal, and a redaction step in front of every write.
 *
 * Redaction happens on the finished line, so nothing (an annotation, a cause
 * with a stack, a grammY error whose message carries `/bot<token>/` in a URL)
 * can route around it.
 */
import { Effect, Formatter, Layer, Logger, References } from "effect"
import type { LogLevel } from "effect/LogLevel"
import { AppConfig, type LogFormat, type LogLevelName, secretsOf } from "./AppConfig.ts"

/** `bot<digits>:<secret>` as it appears in Bot API URLs. */
const BOT_TOKEN_IN_URL = /bot\d+:[A-Za-z0-9_-]+/g
/** A bare bot token, e.g. pasted into a message. */
const BARE_BOT_TOKEN = /\b\d{5,}:[A-Za-z0-9_-]{30,}\b/g

const escapeRegExp = (s: string) => s.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")

/**
 * Builds a function that removes the bot token pattern and every given secret
 * value from a string. Secrets shorter than 6 characters are ignored: they
 * would redact ordinary words and are too weak to matter.
 */
export const makeRedactor = (secrets: ReadonlyArray<string>): (line: string) => string => {
  const literal = [...new Set(secrets.filter((s) => s.length >= 6))]
    .sort((a, b) => b.length - a.length)
    .flatMap((s) => {
      const forms = new Set([s, encodeURIComponent(s), JSON.stringify(s).slice(1, -1)])
      return [...forms].map(escapeRegExp)
    })
  const secretsPattern = literal.length > 0 ? new RegExp(literal.join("|"), "g") : undefined
  return (line) => {
    let out = line.replace(BOT_TOKEN_IN_URL, "bot<redacted>").replace(BARE_BOT_TOKEN, "<redacted>")
    if (secretsPattern !== undefined) out = out.replace(secretsPattern, "<redacted>")
    return out
  }
}

const levelNames: Record<LogLevelName, LogLevel> = {
  trace: "Trace",
  debug: "Debug",
  info: "Info",
  warn: "Warn",
  error: "Error"
}

const clockTime = (iso: string) => iso.slice(11, 23)

const prettyLine = (entry: ReturnType<typeof Logger.formatStructured.log>): string => {
  const message = Array.isArray(entry.message)
    ? entry.message.map((m) => (typeof m === "string" ? m : Formatter.formatJson(m))).join(" ")
    : typeof entry.message === "string"
    ? entry.message
    : Formatter.formatJson(entry.message)
  const annotations = Object.entries(entry.annotations)
    .map(([k, v]) => `${k}=${typeof v === "string" ? v : Formatter.formatJson(v)}`)
    .join(" ")
  const spans = Object.entries(entry.spans).map(([k, v]) => `${k}=${v}ms`).join(" ")
  const head = `${clockTime(entry.timestamp)} ${entry.level.padEnd(5)} ${message}`
  const tail = [annotations, spans].filter((s) => s.length > 0).join(" ")
  const cause = entry.cause === undefined ? "" : `\n${entry.cause}`
  return (tail.length > 0 ? `${head}  ${tail}` : head) + cause
}

export interface LoggerOptions {
  readonly format: LogFormat
  readonly secrets: ReadonlyArray<string>
  /** Where finished lines go; stdout by default. */
  readonly write?: ((line: string) => void) | undefined
}

/** A logger that formats, redacts, then writes exactly one line per entry. */
export const makeLogger = (options: LoggerOptions): Logger.Logger<unknown, void> => {
  const redact = makeRedactor(options.secrets)
  const write = options.write ?? ((line: string) => void process.stdout.write(line + "\n"))
  return Logger.make((entry) => {
    const structured = Logger.formatStructured.log(entry)
    const line = options.format === "json"
      ? Formatter.formatJson({
        timestamp: structured.timestamp,
        level: structured.level,
        message: structured.message,
        ...(structured.cause === undefined ? {} : { cause: structured.cause }),
        ...structured.annotations,
        ...(Object.keys(structured.spans).length > 0 ? { spans: structured.spans } : {})
      })
      : prettyLine(structured)
    write(redact(line))
  })
}

/** Replaces the default logger with ours and applies `LOG_LEVEL`. */
export const LoggingLive = Layer.unwrap(Effect.gen(function*() {
  const config = yield* AppConfig
  return Layer.mergeAll(
    Logger.layer([makeLogger({ format: config.logFormat, secrets: secretsOf(config) })]),
    Layer.succeed(References.MinimumLogLevel, levelNames[config.logLevel])
  )
}))
