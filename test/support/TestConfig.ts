/**
 * Configurations for tests, decoded by the real `AppConfig.load` from an
 * environment record so tests exercise the same parsing as production.
 */
import { ConfigProvider, Effect, Layer } from "effect"
import { AppConfig, type AppConfigShape } from "../../src/platform/AppConfig.ts"

/** Looks like a real token so the redaction patterns are exercised; it is not one. */
export const TEST_BOT_TOKEN = "1234567890:AAFakeTokenForTestsOnly_abcdefghijkl"
export const TEST_KIE_KEY = "kie-test-key-0123456789abcdef"
export const TEST_WEBHOOK_SECRET = "test_webhook_secret-0123456789"

/**
 * The least a service needs to start: test secrets, any free port on loopback,
 * and Telegram and Kie at an address where nothing listens unless a test starts
 * a fake there. Tests that start real service processes spread it into theirs.
 */
export const processEnv: Readonly<Record<string, string>> = {
  TELEGRAM_BOT_TOKEN: TEST_BOT_TOKEN,
  KIE_API_KEY: TEST_KIE_KEY,
  PORT: "0",
  HOST: "127.0.0.1",
  TELEGRAM_API_ROOT: "http://127.0.0.1:9",
  KIE_BASE_URL: "http://127.0.0.1:9"
}

/** `processEnv` for configurations decoded in-process: JSON logs, warnings only. */
export const baseEnv: Record<string, string> = {
  ...processEnv,
  LOG_FORMAT: "json",
  LOG_LEVEL: "warn",
  INSTANCE_ID: "test",
  // Tests drive many sends to one chat within one TestClock instant; pacing has tests of its own.
  TELEGRAM_PACING: "false",
  // Likewise for the flood controls: far above anything a test sends; they have tests of their own.
  FLOOD_CHAT_RATE: "10000/1s",
  FLOOD_USER_RATE: "10000/1s",
  FLOOD_NOTICE_RATE: "10000/1s"
}

export const loadConfig = (env: Record<string, string | undefined>) =>
  AppConfig.load.pipe(
    Effect.provideService(ConfigProvider.ConfigProvider, ConfigProvider.fromUnknown(env))
  )

export const testConfig = (env: Record<string, string> = {}): AppConfigShape =>
  Effect.runSync(loadConfig({ ...baseEnv, ...env }))

export const TestConfigLive = (env: Record<string, string> = {}) => Layer.succeed(AppConfig, testConfig(env))
