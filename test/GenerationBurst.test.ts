/**
 * A burst of 100 generations from 50 users (two each) against the fake Kie
 * with its real account limit of 20 createTask per 10 s, counted in TestClock
 * time like the engine's budget, so the whole minute of simulated time takes
 * a few seconds and nothing depends on the machine's speed.
 *
 * Tasks take about a minute at Kie (five polls 10 s apart), so no user's first
 * picture is finished while the queue drains: the order of submissions is
 * then exactly "every user's first, oldest first, then every user's second".
 */
import { assert, layer } from "@effect/vitest"
import { Effect } from "effect"
import type { Generation } from "../src/generations/Generations.ts"
import { localResult } from "./fakes/FakeKie.ts"
import { withEngine } from "./support/EngineHarness.ts"
import { KieTestDatabase } from "./support/KieTestStack.ts"

const USERS = 50
const WINDOW_MS = 10_000

layer(KieTestDatabase, { timeout: "120 seconds" })("GenerationEngine burst", (it) => {
  it.effect("100 generations from 50 users: no 429, one per user at a time oldest first, positions shown, all delivered", () =>
    withEngine(
      {
        env: { KIE_POLL_INTERVAL_MS: "10000", GENERATION_TIMEOUT_MS: "600000", SEND_ORIGINAL_DOCUMENT: "false" },
        fake: {
          defaultTask: { steps: ["generating", "generating", "generating", "generating", "generating", localResult()] }
        },
        limits: { maxActivePerUser: 2 }
      },
      (h) =>
        Effect.gen(function*() {
          // Created user by user: u1's two, then u2's two... (ids increase in this order).
          const byUser = new Map<number, Array<Generation>>()
          for (let user = 1; user <= USERS; user++) {
            const userId = 1000 + user
            byUser.set(userId, [
              yield* h.create({ userId, prompt: `p${userId}a` }),
              yield* h.create({ userId, prompt: `p${userId}b` })
            ])
          }
          const all = [...byUser.values()].flat()
          // Fair order: every user's first in age order, then every user's second.
          const expected = [...[...byUser.values()].map((gs) => gs[0]!), ...[...byUser.values()].map((gs) => gs[1]!)]
          const indexOf = new Map(expected.map((g, i) => [g.id, i]))

          yield* h.startEngine
          const started = Date.now()
          const delivered = Effect.map(
            Effect.forEach(all, (g) => h.row(g.id)),
            (rows) => rows.every((r) => r.status === "delivered" && r.statusMessageId === null)
          )
          const steps = yield* h.advanceUntil(delivered, { maxSteps: 400, what: "all delivered" })
          const elapsedReal = Date.now() - started

          // Never a 429, one task each.
          assert.strictEqual(h.kie.counters.rateLimited, 0, "no rate-limit answer from Kie")
          assert.strictEqual(h.kie.counters.createTask, 100)
          assert.strictEqual(h.kie.counters.tasksCreated, 100)

          // The engine's order: the "queued → submitting" transitions.
          const submittedOrder = h.logs.lines()
            .map((l) => /^\[GEN\] generation (\d+): queued → submitting$/.exec(l.message)?.[1])
            .filter((id): id is string => id !== undefined)
          assert.deepStrictEqual(submittedOrder, expected.map((g) => g.id), "oldest first, one per user at a time")

          // What Kie saw: 20 per window, each window the next 20 of the fair order.
          const creates = h.kie.requests.filter((r) => r.path === "/api/v1/jobs/createTask")
          const windows = new Map<number, Array<string>>()
          for (const request of creates) {
            const window = Math.floor(request.at / WINDOW_MS)
            windows.set(window, [...(windows.get(window) ?? []), JSON.parse(request.body).input.prompt])
          }
          assert.deepStrictEqual([...windows.keys()], [0, 1, 2, 3, 4])
          for (const [window, prompts] of windows) {
            const want = expected.slice(window * 20, window * 20 + 20).map((g) =>
              `p${g.userId}${g === byUser.get(g.userId)![0] ? "a" : "b"}`
            )
            assert.sameMembers(prompts, want, `window ${window}`)
          }
          const lastCreate = Math.max(...creates.map((r) => r.at))

          // Positions: every generation that waited past the first two windows saw its place in
          // the queue, never a place behind the one it had, and it only went down.
          const editsOf = (g: Generation) =>
            h.telegram.calls("editMessageText").filter((c) =>
              c.params.chat_id === g.chatId && c.params.message_id === g.statusMessageId
            )
          let shown = 0
          for (const g of all) {
            const index = indexOf.get(g.id)!
            const positions = editsOf(g)
              .map((c) => /Вы в очереди: (\d+)$/.exec(String(c.params.text))?.[1])
              .filter((p): p is string => p !== undefined)
              .map(Number)
            if (index >= 40)
              assert.isNotEmpty(positions, `generation ${g.id} (${index + 1}th in line) saw its position`)
            for (const p of positions) {
              // Edits start 10 s in, when the first window (20) is gone; later ones may be taken mid-window.
              assert.isAtLeast(p, 1)
              assert.isAtMost(p, index + 1 - 20, `generation ${g.id} (${index + 1}th in line) shown at position ${p}`)
            }
            for (let i = 1; i < positions.length; i++) assert.isAtMost(positions[i]!, positions[i - 1]!)
            shown += positions.length
            // At most one edit per message per 10 s of clock (checked on what the chat received).
            const times = editsOf(g).map((c) => c.at)
            assert.isAtMost(times.length, 1 + Math.ceil(steps / 10))
          }

          // Delivered: one photo per generation, status messages gone.
          for (const [userId, gs] of byUser) {
            assert.lengthOf(h.media(userId, "photo"), 2, `user ${userId}`)
            for (const g of gs) {
              assert.isUndefined(h.telegram.messages(userId).find((m) => m.messageId === g.statusMessageId))
            }
          }
          console.log(
            `[burst] 100 createTask within ${(lastCreate / 1000).toFixed(2)} s of TestClock (budget 20/10s); ` +
              `all delivered after ${steps} s; ${shown} position edits; ${elapsedReal} ms real time`
          )
        })
    ))
})
