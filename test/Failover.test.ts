import { assert, layer } from "@effect/vitest"
import { Effect, Layer } from "effect"
import { LeaderTerm } from "../src/leadership/LeaderTerm.ts"
import { TestClock } from "effect/testing"
import * as Dispatcher from "../src/dispatch/Dispatcher.ts"
import { Inbox } from "../src/inbox/Inbox.ts"
import * as Reconciler from "../src/inbox/Reconciler.ts"
import { makeLogCapture } from "./support/LogCapture.ts"
import { becomeLeader, makeRecordingHandler, message, PipelineLive, rowOf, store } from "./support/Pipeline.ts"
import { connectedAs } from "./support/TestDatabase.ts"

// The reconciler's second pass comes after the stuck threshold, so one clock step triggers it.
const env = {
  WORKERS: "2",
  STUCK_UPDATE_THRESHOLD_MS: "90000",
  RECONCILE_INTERVAL_MS: "100000",
  ORPHAN_UPDATE_THRESHOLD_MS: "60000"
}

const LeaderOnly = Layer.mergeAll(Dispatcher.layer, Reconciler.layer)

layer(PipelineLive(env), { timeout: "60 seconds" })("failover", (it) => {
  it.effect("a deposed leader that never handed its rows back: the next one reprocesses them past the threshold, in order, and only their chat waits", () =>
    Effect.gen(function*() {
      const [x, y, w, v] = [101, 102, 103, 104]
      const chatA = 11
      const chatB = 12
      const recorder = yield* makeRecordingHandler
      const logs = makeLogCapture()

      yield* store(message(x, chatA), message(y, chatA))
      // The first leader runs in another process that is still connected but never hands its rows back (it
      // froze, or lost the database along with the lock), so the next leader cannot tell that its handlers
      // stopped: its rows wait for the threshold.
      yield* connectedAs("deposed-process")
      const claimed = yield* (yield* Inbox).claim("deposed-process/term-1", 10)
      assert.deepStrictEqual(claimed.map((row) => row.updateId), [x, y])

      // The next leader: chat A's new update waits behind the dead leader's rows, chat B goes on.
      const mark = logs.mark()
      const next = yield* becomeLeader(LeaderOnly, recorder.handler).pipe(Effect.provide(logs.layer))
      // Its first reconciler pass (at once) must be over before the clock moves.
      yield* logs.awaitLine((l) => l.message.startsWith("[RECONCILE] pass done"), { after: mark })
      yield* store(message(w, chatA), message(v, chatB))
      yield* recorder.awaitEnded([v])
      assert.deepStrictEqual(
        recorder.history().filter((e) => e.chatId === chatA),
        [],
        "nothing of chat A ran on the new leader yet"
      )

      // Past STUCK_UPDATE_THRESHOLD_MS the reconciler hands x and y back; they run first, then w.
      yield* TestClock.adjust("100 seconds")
      yield* logs.awaitLine((l) => l.message.startsWith(`[RECONCILE] update ${x} was stuck in processing for 100 s`))
      yield* recorder.awaitEnded([x, y, w])
      const chatAOrder = recorder.ended().filter((e) => e.chatId === chatA).map((e) => e.updateId)
      assert.deepStrictEqual(chatAOrder, [x, y, w])
      const rerun = recorder.history().find((e) => e.updateId === x && e.phase === "end")
      assert.strictEqual(rerun?.attempt, 2, "the handler is told this is not the first run")
      // w waited long enough to be an orphan, and was dispatched (above, in order). Whether the pass
      // also logs it as one depends on a race: the dispatcher's sweep, fired by the same clock step,
      // may claim w with x and y before the pass reads the pending rows. Never twice, though (the
      // orphan log itself is tested in Reconciler.test.ts).
      assert.isAtMost(logs.lines().filter((l) => l.message.startsWith(`[RECONCILE] orphan update ${w} `)).length, 1)
      // Released, not lost: w's finish (committed after its handler ended) is not cut off, so the next test
      // finds no row of this one left in processing.
      yield* next.release
    }))

  it.effect("a leader whose process is gone (no connection left): the next leader takes its rows back at once, in order", () =>
    Effect.gen(function*() {
      const [x, y, w] = [201, 202, 203]
      const chatA = 21
      const recorder = yield* makeRecordingHandler
      const logs = makeLogCapture()

      // The first leader ran in a process whose instance has no connection now (it was SIGKILLed while it
      // held x and y, so it never handed them back).
      yield* store(message(x, chatA), message(y, chatA))
      yield* (yield* Inbox).claim("killed-process/term-1", 10)
      assert.strictEqual((yield* rowOf(x))?.claimed_by, "killed-process/term-1")

      // The next leader: no clock move at all, yet x, y and then w run, in order.
      const next = yield* becomeLeader(LeaderOnly, recorder.handler).pipe(Effect.provide(logs.layer))
      yield* store(message(w, chatA))
      yield* recorder.awaitEnded([x, y, w])
      assert.deepStrictEqual(recorder.ended().map((e) => e.updateId), [x, y, w])
      assert.strictEqual(recorder.history().find((e) => e.updateId === x && e.phase === "end")?.attempt, 2)
      yield* logs.awaitLine((l) =>
        l.message.startsWith(`[RECONCILE] update ${x} was in processing for 0 s under killed-process/term-1`)
      )
      // Released, not lost, as above: the next test finds every row of this one finished.
      yield* next.release
    }))
  it.effect("a deposed leader that still reaches the database hands its rows back once it stopped: the next one runs them at once, in order", () =>
    Effect.gen(function*() {
      const [x, y, w] = [301, 302, 303]
      const chatA = 31
      const recorder = yield* makeRecordingHandler
      const logs = makeLogCapture()
      // The first leader never finishes x on its own: it loses the lock in the middle of it.
      recorder.script(x, (context) => (context.attempt === 1 ? Effect.never : Effect.void))

      yield* store(message(x, chatA), message(y, chatA))
      // Its process stays connected (only its lock session was cut), so the next leader's reconciler may
      // not take its rows back before DEPOSED_TERM_GRACE.
      yield* connectedAs("cut-process")
      const cutTerm = Layer.succeed(LeaderTerm, { id: "cut-process/term-1" })
      const first = yield* becomeLeader(LeaderOnly.pipe(Layer.provide(cutTerm)), recorder.handler).pipe(
        Effect.provide(logs.layer)
      )
      yield* recorder.awaitEvents(1, (e) => e.updateId === x && e.phase === "start")

      // The next leader is ACTIVE before the first one notices its loss, as after a cut lock session.
      const mark = logs.mark()
      yield* becomeLeader(LeaderOnly, recorder.handler).pipe(Effect.provide(logs.layer))
      yield* logs.awaitLine((l) => l.message.startsWith("[RECONCILE] pass done"), { after: mark })
      yield* store(message(w, chatA))
      assert.deepStrictEqual(recorder.ended(), [], "chat A waits behind the first leader's rows")

      // No clock move: the first leader's hand-back and its NOTIFY alone bring x, y and w to the next.
      yield* first.lose.pipe(Effect.provide(logs.layer))
      yield* recorder.awaitEnded([x, y, w])
      assert.deepStrictEqual(recorder.ended().map((e) => [e.updateId, e.attempt]), [[x, 2], [y, 1], [w, 1]])
      assert.isUndefined(
        logs.lines().find((l) => l.message.startsWith("[RECONCILE] update ")),
        "the reconciler took nothing back"
      )
    }))
})
