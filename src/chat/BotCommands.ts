/**
 * ACTIVE only: registers the bot's commands (/start, /help, /cancel) with
 * setMyCommands, in Russian (also the default for every other language) and
 * English, each time this instance becomes ACTIVE. Failures are retried in
 * the background and never hold up leadership.
 */
import { Effect, Layer } from "effect"
import { botCommands } from "../texts/Messages.ts"
import { Telegram, type TelegramError } from "../telegram/Telegram.ts"
import { backoff } from "../platform/Retry.ts"
import { retryLogged } from "../platform/Supervised.ts"

/** Backoff between attempts to register the commands. */
export const botCommandsPolicy = backoff("2 seconds", "5 minutes")

/** Registers the commands in the background on the ACTIVE instance. */
export const layer: Layer.Layer<never, never, Telegram> = Layer.effectDiscard(Effect.gen(function*() {
  const telegram = yield* Telegram
  const registerAll = Effect.all([
    telegram.setMyCommands({ commands: botCommands("ru") }),
    telegram.setMyCommands({ commands: botCommands("ru"), language_code: "ru" }),
    telegram.setMyCommands({ commands: botCommands("en"), language_code: "en" })
  ], { discard: true })
  const register = retryLogged(registerAll, botCommandsPolicy, {
    failing: (error: TelegramError) => `[COMMANDS] setMyCommands failed, retrying: ${error.message}`,
    recovered: "[COMMANDS] setMyCommands works again"
  }).pipe(
    Effect.tap(() => Effect.logInfo("[COMMANDS] bot commands registered (ru, en)")),
    Effect.withSpan("BotCommands.register")
  )
  yield* Effect.forkScoped(register)
}))
