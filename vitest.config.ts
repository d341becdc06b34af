import { defineConfig } from "vitest/config"

export default defineConfig({
  test: {
    include: ["test/**/*.test.ts"],
    globalSetup: ["test/support/globalSetup.ts"],
    testTimeout: 60_000,
    hookTimeout: 120_000,
    // Every file gets its own database, so files run in parallel safely.
    fileParallelism: true,
    env: { HOST: "127.0.0.1" }
  }
})
