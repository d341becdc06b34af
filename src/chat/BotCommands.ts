/**
 * ACTIVE only: registers the bot's commands (/start, /help, /cancel) with
 * setMyCommands, in Russian (also the default for every other language) and
 * English, each time this instance becomes ACTIVE. Failures are retried in
 * the background and never hold up leadership.
 */
import { Effect, Layer } from "effect"
import { botCommands } from "./Messages.ts"
import { makeProblemLog } from "../platform/ProblemLog.ts"
import { Telegram, type TelegramError } from "../telegram/Telegram.ts"
import { backoff } from "../platform/Retry.ts"

export const botCommandsPolicy = backoff("2 seconds", "5 minutes")

export const layer: Layer.Layer<never, never, Telegram> = Layer.effectDiscard(Effect.gen(function*() {
  const telegram = yield* Telegram
  const problems = makeProblemLog()
  const register = Effect.all([
    telegram.setMyCommands({ commands: botCommands("ru") }),
    telegram.setMyCommands({ commands: botCommands("ru"), language_code: "ru" }),
    telegram.setMyCommands({ commands: botCommands("en"), language_code: "en" })
  ], { discard: true }).pipe(
    Effect.tapError((error: TelegramError) => problems.failing(`[COMMANDS] setMyCommands failed, retrying: ${error.message}`)),
    Effect.retry(botCommandsPolicy),
    Effect.tap(() => Effect.logInfo("[COMMANDS] bot commands registered (ru, en)")),
    Effect.withSpan("BotCommands.register")
  )
  yield* Effect.forkScoped(register)
}))
