/**
 * The two flood controls alone: the inbox's gate (what is stored at all)
 * and the dispatcher's watch (what is answered), with plain millisecond
 * times as the services hand in the Effect clock's.
 */
import { assert, describe, it } from "@effect/vitest"
import { Duration } from "effect"
import { makeFloodWatch, MAX_TRACKED_SENDERS } from "../src/dispatch/FloodWatch.ts"
import { makeFloodGate, MAX_TRACKED } from "../src/inbox/FloodGate.ts"
import * as FakeTelegram from "./fakes/FakeTelegram.ts"

const rate = (count: number, window: Duration.Duration) => ({ count, window })
const rates = { perChat: rate(60, Duration.minutes(1)), perUser: rate(30, Duration.minutes(1)) }

const texts = (chatId: number, n: number, userId = chatId, firstId = 1) =>
  Array.from(
    { length: n },
    (_, i) => ({ ...FakeTelegram.textMessage({ chatId, userId, text: `spam ${i}` }), update_id: firstId + i }) as any
  )

describe("FloodGate (inbox)", () => {
  it("one user's 1,000 updates at once: the user's rate is stored, the rest dropped; other chats pass", () => {
    const gate = makeFloodGate(rates)
    const { admitted, dropped } = gate.admit(texts(5, 1_000), 0)
    assert.strictEqual(admitted.length, 30)
    assert.strictEqual(dropped, 970)
    assert.deepStrictEqual(admitted.map((u) => u.update_id), Array.from({ length: 30 }, (_, i) => 1 + i))
    const others = gate.admit(Array.from({ length: 50 }, (_, i) => texts(100 + i, 1, 100 + i, 5_000 + i)[0]), 0)
    assert.strictEqual(others.admitted.length, 50)
  })

  it("the bucket refills over the window: a flooder gets a message through every two seconds", () => {
    const gate = makeFloodGate(rates)
    gate.admit(texts(5, 100), 0)
    assert.strictEqual(gate.admit(texts(5, 1, 5, 200), 1_000).admitted.length, 0)
    assert.strictEqual(gate.admit(texts(5, 1, 5, 201), 2_000).admitted.length, 1)
    assert.strictEqual(gate.admit(texts(5, 1, 5, 202), 60_000).admitted.length, 1, "after the flood, as usual")
  })

  it("a group chat has its own, larger rate: many users in one group are held to it", () => {
    const gate = makeFloodGate(rates)
    const group = Array.from({ length: 10 }, (_, user) => texts(-100, 10, 1_000 + user, 1 + user * 10)).flat()
    assert.strictEqual(gate.admit(group, 0).admitted.length, 60)
  })

  it("updates of no chat and no user always pass; full buckets are forgotten past MAX_TRACKED", () => {
    const gate = makeFloodGate(rates)
    assert.strictEqual(gate.admit([{ update_id: 1, poll: { id: "p" } } as any], 0).admitted.length, 1)
    for (let chat = 1; chat <= MAX_TRACKED; chat++) gate.admit(texts(chat, 1, chat, chat), 0)
    gate.admit(texts(MAX_TRACKED + 1, 1), 3_600_000)
    assert.isAtMost(gate.tracked(), 4)
  })
})

describe("FloodWatch (dispatcher)", () => {
  it("within the window: the first updates answered, the next one notice, the rest quiet", () => {
    const watch = makeFloodWatch(rate(6, Duration.seconds(10)))
    const verdicts = Array.from({ length: 10 }, (_, i) => watch.verdict("5:5", i * 100))
    assert.deepStrictEqual(verdicts, [
      ...Array(6).fill("answer"),
      "notice",
      "quiet",
      "quiet",
      "quiet"
    ])
    // Another user in the same chat, or another chat, is not part of this flood.
    assert.strictEqual(watch.verdict("5:6", 1_000), "answer")
    assert.strictEqual(watch.verdict("6:5", 1_000), "answer")
  })

  it("once a whole window passes quietly, commands work again; a flood that goes on gets no second notice", () => {
    const watch = makeFloodWatch(rate(6, Duration.seconds(10)))
    for (let i = 0; i < 7; i++) watch.verdict("5:5", 0)
    // Still flooding, a message a second: the window never empties.
    for (let at = 1_000; at <= 30_000; at += 1_000) assert.strictEqual(watch.verdict("5:5", at), "quiet")
    assert.strictEqual(watch.verdict("5:5", 40_001), "answer")
    for (let i = 0; i < 5; i++) watch.verdict("5:5", 40_002)
    assert.strictEqual(watch.verdict("5:5", 40_003), "notice", "a new flood gets its own notice")
  })

  it("memory stays bounded: senders quiet for a window are forgotten", () => {
    const watch = makeFloodWatch(rate(6, Duration.seconds(10)))
    for (let n = 0; n < MAX_TRACKED_SENDERS; n++) watch.verdict(`${n}:${n}`, 0)
    watch.verdict("new:1", 60_000)
    assert.strictEqual(watch.tracked(), 1)
  })
})
