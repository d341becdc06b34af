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

export const baseEnv: Record<string, string> = {
  TELEGRAM_BOT_TOKEN: TEST_BOT_TOKEN,
  KIE_API_KEY: TEST_KIE_KEY,
  PORT: "0",
  HOST: "127.0.0.1",
  LOG_FORMAT: "json",
  LOG_LEVEL: "warn",
  // Nothing listens here unless a test starts a fake on it.
  TELEGRAM_API_ROOT: "http://127.0.0.1:9",
  KIE_BASE_URL: "http://127.0.0.1:9",
  INSTANCE_ID: "test"
}

export const loadConfig = (env: Record<string, string | undefined>) =>
  AppConfig.load.pipe(
    Effect.provideService(ConfigProvider.ConfigProvider, ConfigProvider.fromUnknown(env))
  )

export const testConfig = (env: Record<string, string> = {}): AppConfigShape =>
  Effect.runSync(loadConfig({ ...baseEnv, ...env }))

export const TestConfigLive = (env: Record<string, string> = {}) => Layer.succeed(AppConfig, testConfig(env))
