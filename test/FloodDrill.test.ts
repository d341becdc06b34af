/**
 * The flood drill in small (the full one runs in `npm run chaos`): one real
 * instance in webhook mode; one chat sends 300 messages while Telegram
 * answers it 429, and 10 other users go from `/start` to their picture. See
 * test/support/FloodDrill.ts for what it checks. Live clock (a real
 * process); every wait is event-driven or bounded.
 */
import { assert, describe, it } from "@effect/vitest"
import { Effect } from "effect"
import * as os from "node:os"
import * as path from "node:path"
import { runFloodDrill } from "./support/FloodDrill.ts"
import { freshDatabaseUrl } from "./support/TestDatabase.ts"

describe("flood drill", () => {
  it.live(
    "one chat floods the bot: the others are answered at once and get their pictures; the flood costs a few rows and messages",
    () =>
      Effect.gen(function*() {
        const report = yield* runFloodDrill({
          databaseUrl: yield* freshDatabaseUrl,
          floodUpdates: 300,
          otherChats: 10,
          // The goal is 1 s (npm run chaos checks it); a loaded CI machine gets room here.
          startP99GoalMs: 5_000,
          floodRetryAfterSeconds: 5,
          // A short notice window, so the flood has passed soon after it ends.
          env: { FLOOD_NOTICE_RATE: "6/2s" },
          afterFloodMs: 2_500,
          timeoutMs: 100_000,
          logDir: path.join(os.tmpdir(), `zimage-flood-drill-${process.pid}`)
        })
        console.log(`flood drill: ${JSON.stringify({ startWait: report.startWait, flooder: report.flooder })}`)
        const failed = report.checks.filter((c) => !c.ok)
        assert.deepStrictEqual(failed, [], JSON.stringify(report, null, 2))
        // Telegram did answer the flooder 429, and its updates waited that out without dying.
        assert.isAbove(report.flooder.answered429, 0)
        assert.isAtMost(report.flooder.rowsStored, 60)
        assert.isAtLeast(report.flooder.droppedMetric, 300 - 60)
      }),
    { timeout: 150_000 }
  )
})
