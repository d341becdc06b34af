/**
 * The fault drill in small (the full one is `npm run chaos`): two real
 * instances behind a load balancer on one database, 70 updates from 15 chats
 * and 5 generations, one SIGKILL of the ACTIVE instance mid-traffic. See
 * test/support/Drill.ts for what it checks. Live clock (real processes);
 * every wait is event-driven and bounded.
 */
import { assert, describe, it } from "@effect/vitest"
import { Effect } from "effect"
import * as os from "node:os"
import * as path from "node:path"
import { runDrill } from "./support/Drill.ts"
import { freshDatabaseUrl } from "./support/TestDatabase.ts"

describe("fault drill", () => {
  it.live(
    "one SIGKILL of the ACTIVE instance mid-traffic: every update once and in order, every photo once",
    () =>
      Effect.gen(function*() {
        const databaseUrl = yield* freshDatabaseUrl
        const report = yield* runDrill({
          databaseUrl,
          burstChats: 10,
          generations: 5,
          faults: ["kill"],
          spreadMs: 2_000,
          telegramLatencyMs: 30,
          generationTimeoutMs: 20_000,
          timeoutMs: 100_000,
          // Kept for a post-mortem when a check fails.
          logDir: path.join(os.tmpdir(), `zimage-drill-${process.pid}`),
          env: {
            // Rows the killed leader was handling come back within seconds, not the production 90 s.
            UPDATE_HANDLER_TIMEOUT_MS: "3000",
            STUCK_UPDATE_THRESHOLD_MS: "4000",
            RECONCILE_INTERVAL_MS: "1000"
          }
        })
        const failed = report.checks.filter((c) => !c.ok)
        assert.deepStrictEqual(failed, [], JSON.stringify(report.checks, null, 2))
        // The 70 sent, plus what users pressed again after a kill: a retry
        // button, or a ratio keyboard sent twice (see the stale presses).
        assert.strictEqual(report.updates, 70 + report.retriedGenerations + report.stalePresses)
        assert.strictEqual(report.photosDelivered, 5)
        assert.strictEqual(report.faults.length, 1)
        assert.isBelow(report.faults[0]!.failoverMs, 2_000)
      }),
    { timeout: 150_000 }
  )
})
