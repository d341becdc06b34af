/**
 * Captures log lines so a test can wait for one (event-driven, with a bound
 * in real time) instead of sleeping: e.g. wait for "waiting 5 s" before
 * advancing the TestClock by 5 seconds. Lines go through the production
 * redactor, so tests can also assert that no secret is ever logged.
 */
import { Data, Effect, Layer, Logger, References } from "effect"
import { makeLogger } from "../../src/platform/Logging.ts"
import { TEST_BOT_TOKEN, TEST_KIE_KEY, TEST_WEBHOOK_SECRET } from "./TestConfig.ts"

export class LogLineTimeout extends Data.TaggedError("LogLineTimeout")<{ readonly message: string }> {}

export interface CapturedLine {
  readonly level: string
  readonly message: string
  /** The whole redacted JSON line, as production would print it. */
  readonly raw: string
}

export interface LogCapture {
  /** Replaces the loggers (and lowers the minimum level to Debug) for what it is provided to. */
  readonly layer: Layer.Layer<never>
  readonly lines: () => ReadonlyArray<CapturedLine>
  /** The first line (already logged or future) matching; fails after `timeoutMs` of real time. */
  readonly awaitLine: (
    match: (line: CapturedLine) => boolean,
    options?: { readonly timeoutMs?: number; readonly after?: number }
  ) => Effect.Effect<CapturedLine, LogLineTimeout>
  /** How many lines so far; pass as `after` to wait only for later lines. */
  readonly mark: () => number
}

export const makeLogCapture = (options: { readonly echo?: boolean } = {}): LogCapture => {
  const captured: Array<CapturedLine> = []
  const waiters = new Set<
    { index: number; match: (line: CapturedLine) => boolean; resolve: (l: CapturedLine) => void }
  >()
  const logger = makeLogger({
    format: "json",
    secrets: [TEST_BOT_TOKEN, TEST_KIE_KEY, TEST_WEBHOOK_SECRET],
    write: (raw) => {
      const parsed = JSON.parse(raw) as { level: string; message: unknown }
      const message = Array.isArray(parsed.message) ? parsed.message.map(String).join(" ") : String(parsed.message)
      const line = { level: parsed.level, message, raw }
      captured.push(line)
      if (options.echo === true) process.stdout.write(raw + "\n")
      for (const waiter of Array.from(waiters)) {
        if (captured.length > waiter.index && waiter.match(line)) {
          waiters.delete(waiter)
          waiter.resolve(line)
        }
      }
    }
  })
  return {
    layer: Layer.mergeAll(Logger.layer([logger]), Layer.succeed(References.MinimumLogLevel, "Debug")),
    lines: () => [...captured],
    mark: () => captured.length,
    awaitLine: (match, opts = {}) =>
      Effect.suspend(() => {
        const after = opts.after ?? 0
        const found = captured.slice(after).find(match)
        if (found !== undefined) return Effect.succeed(found)
        const timeoutMs = opts.timeoutMs ?? 5000
        return Effect.callback<CapturedLine, LogLineTimeout>((resume) => {
          const waiter = {
            index: after,
            match,
            resolve: (line: CapturedLine) => {
              clearTimeout(timer)
              resume(Effect.succeed(line))
            }
          }
          const timer = setTimeout(() => {
            waiters.delete(waiter)
            resume(Effect.fail(new LogLineTimeout({ message: `no matching log line within ${timeoutMs} ms` })))
          }, timeoutMs)
          waiters.add(waiter)
          return Effect.sync(() => {
            clearTimeout(timer)
            waiters.delete(waiter)
          })
        })
      })
  }
}
