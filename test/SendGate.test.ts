/**
 * The flood gate (`telegram/SendGate.ts`) alone: pacing per chat, the bot's
 * own sends, 429 pauses per chat and for everyone, the memory bound. Times
 * are plain milliseconds handed in, as the Telegram client hands in the
 * Effect clock's.
 */
import { assert, describe, it } from "@effect/vitest"
import {
  GLOBAL_429_CHATS,
  GROUP_BURST,
  makeSendGate,
  MAX_TRACKED_CHATS,
  OWN_PER_SECOND,
  PRIVATE_BURST
} from "../src/telegram/SendGate.ts"

const PRIVATE = 42
const GROUP = -100_42

describe("SendGate", () => {
  it("a private chat gets a short burst, then one message a second, each caller booked its own slot", () => {
    const gate = makeSendGate({ pacing: true })
    const waits = Array.from({ length: PRIVATE_BURST + 3 }, () => gate.take(PRIVATE, false, 10_000))
    assert.deepStrictEqual(waits, [...Array(PRIVATE_BURST).fill(0), 1_000, 2_000, 3_000])
    // Time passes: the booked slots are used up in order, and the bucket refills afterwards.
    assert.strictEqual(gate.waitFor(PRIVATE, false, 13_000), 1_000)
    assert.strictEqual(gate.waitFor(PRIVATE, false, 20_000), 0)
    // Another chat is not held back by this one.
    assert.strictEqual(gate.take(PRIVATE + 1, false, 10_000), 0)
  })

  it("a group gets a short burst, then 20 messages a minute", () => {
    const gate = makeSendGate({ pacing: true })
    for (let n = 0; n < GROUP_BURST; n++) assert.strictEqual(gate.take(GROUP, false, 0), 0)
    assert.strictEqual(gate.take(GROUP, false, 0), 3_000)
    assert.strictEqual(gate.take(GROUP, false, 0), 6_000)
  })

  it("the bot's own sends share one bucket of 30 a second; replies to users do not take from it", () => {
    const gate = makeSendGate({ pacing: true })
    for (let chat = 1; chat <= OWN_PER_SECOND; chat++) assert.strictEqual(gate.take(chat, true, 0), 0)
    const next = gate.take(OWN_PER_SECOND + 1, true, 0)
    assert.isAbove(next, 0)
    assert.isAtMost(next, Math.ceil(1_000 / OWN_PER_SECOND))
    // A reply to a user in a fresh chat is not slowed by the bot's own sends.
    assert.strictEqual(gate.take(OWN_PER_SECOND + 2, false, 0), 0)
  })

  it("a 429 for one chat pauses that chat only, for retry_after", () => {
    const gate = makeSendGate({ pacing: true })
    gate.rateLimited(PRIVATE, 20_000, 1_000)
    assert.strictEqual(gate.waitFor(PRIVATE, false, 1_000), 20_000)
    assert.strictEqual(gate.waitFor(PRIVATE, false, 15_000), 6_000)
    assert.strictEqual(gate.waitFor(PRIVATE + 1, false, 1_000), 0)
    assert.strictEqual(gate.waitFor(PRIVATE, false, 21_000), 0)
    // After the pause: one message, then one a second, no new burst.
    assert.deepStrictEqual([0, 1, 2].map(() => gate.take(PRIVATE, false, 21_000)), [0, 1_000, 2_000])
  })

  it("a 429 on a call to no chat pauses every chat", () => {
    const gate = makeSendGate({ pacing: true })
    gate.rateLimited(undefined, 5_000, 0)
    assert.strictEqual(gate.waitFor(PRIVATE, false, 0), 5_000)
    assert.strictEqual(gate.waitFor(GROUP, true, 1_000), 4_000)
    assert.strictEqual(gate.waitFor(PRIVATE, false, 5_000), 0)
  })

  it(`429s for ${GLOBAL_429_CHATS} different chats within a second pause every chat; spread out they do not`, () => {
    const spread = makeSendGate({ pacing: true })
    for (let n = 0; n < GLOBAL_429_CHATS; n++) spread.rateLimited(n + 1, 3_000, n * 1_500)
    assert.strictEqual(spread.waitFor(999, false, GLOBAL_429_CHATS * 1_500), 0)

    const burst = makeSendGate({ pacing: true })
    for (let n = 0; n < GLOBAL_429_CHATS - 1; n++) burst.rateLimited(n + 1, 3_000, n * 100)
    assert.strictEqual(burst.waitFor(999, false, 500), 0, "one chat short of the threshold")
    burst.rateLimited(GLOBAL_429_CHATS, 3_000, 500)
    assert.strictEqual(burst.waitFor(999, false, 500), 3_000)
  })

  it("without pacing only 429 pauses hold calls back", () => {
    const gate = makeSendGate({ pacing: false })
    for (let n = 0; n < 50; n++) assert.strictEqual(gate.take(PRIVATE, true, 0), 0)
    gate.rateLimited(PRIVATE, 7_000, 0)
    assert.strictEqual(gate.take(PRIVATE, false, 0), 7_000)
  })

  it("idle chats are forgotten, so memory stays bounded however many chats write", () => {
    const gate = makeSendGate({ pacing: true })
    for (let chat = 1; chat <= MAX_TRACKED_CHATS * 2; chat++) gate.take(chat, false, chat * 10)
    assert.isAtMost(gate.trackedChats(), MAX_TRACKED_CHATS)
    // A chat still paused outlives the idle ones.
    gate.rateLimited(-7, 60_000_000, MAX_TRACKED_CHATS * 20)
    for (let chat = 1; chat <= MAX_TRACKED_CHATS * 2; chat++) gate.take(chat, false, MAX_TRACKED_CHATS * 30 + chat)
    assert.isAbove(gate.waitFor(-7, false, MAX_TRACKED_CHATS * 100), 0)
  })
})
