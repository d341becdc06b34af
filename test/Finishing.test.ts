/**
 * The group-committed finish (`dispatch/Finishing.ts`, `Inbox.completeWith`):
 * the chat's state and the cleared blocked flag are written in the
 * transaction that marks the updates done, only for the updates this term
 * still owns, and with the done mark or not at all.
 */
import { assert, layer } from "@effect/vitest"
import { Effect, Layer, Option } from "effect"
import { SqlClient } from "effect/sql/SqlClient"
import { ChatSessions, type SessionEntry } from "../src/chat/ChatSessions.ts"
import { makeFinishing } from "../src/dispatch/Finishing.ts"
import { type FinishWrite, UpdateHandler } from "../src/dispatch/UpdateHandler.ts"
import { Inbox } from "../src/inbox/Inbox.ts"
import { Telegram } from "../src/telegram/Telegram.ts"
import { clearInbox, message, PipelineLive, rowOf, store } from "./support/Pipeline.ts"

const TERM = "finishing-test"

/** Blocks `chatId` an hour before `updateId` arrived (so finishing that update may clear it). */
const blockedBefore = (chatId: number, updateId: number) =>
  Effect.gen(function*() {
    const sql = yield* SqlClient
    yield* sql`
      INSERT INTO telegram_chats (chat_id, blocked_at, blocked_reason, updated_at)
      SELECT ${chatId}, received_at - interval '1 hour', 'Forbidden: bot was blocked by the user', received_at
      FROM telegram_updates WHERE update_id = ${updateId}
      ON CONFLICT (chat_id) DO UPDATE SET blocked_at = EXCLUDED.blocked_at`
  })

const isBlocked = (chatId: number) =>
  Effect.gen(function*() {
    const sql = yield* SqlClient
    const [row] = yield* sql<{ blocked: boolean }>`
      SELECT blocked_at IS NOT NULL AS blocked FROM telegram_chats WHERE chat_id = ${chatId}`
    return row?.blocked ?? false
  })

/** The state a `/start` leaves (the session a handler would write). */
const idleAfter = (updateId: number, chatId: number): FinishWrite & SessionEntry => ({
  updateId,
  chatId,
  userId: chatId,
  session: { state: { _tag: "Idle" }, lang: "en", lastUpdateId: updateId }
})

/** Stores updates from chats (chat = user), blocks each chat before its update, and claims them for TERM. */
const claimedFromBlockedChats = (updates: ReadonlyArray<readonly [updateId: number, chatId: number]>) =>
  Effect.gen(function*() {
    yield* clearInbox
    yield* store(...updates.map(([updateId, chatId]) => message(updateId, chatId)))
    for (const [updateId, chatId] of updates) yield* blockedBefore(chatId, updateId)
    const claimed = yield* (yield* Inbox).claim(TERM, updates.length)
    assert.strictEqual(claimed.length, updates.length)
    return new Map(claimed.map((c) => [c.updateId, c]))
  })

layer(Layer.provideMerge(ChatSessions.layer, PipelineLive()), { timeout: "60 seconds" })("Finishing", (it) => {
  it.effect("writes the session and clears the blocked flag only for updates the term still owns", () =>
    Effect.gen(function*() {
      const sql = yield* SqlClient
      const inbox = yield* Inbox
      const sessions = yield* ChatSessions
      const [owned, stolen] = [81_001, 81_002]
      const [ownedChat, stolenChat] = [82_001, 82_002]
      const claimed = yield* claimedFromBlockedChats([[owned, ownedChat], [stolen, stolenChat]])
      // Another term took `stolen` over while its handler ran (this term was deposed for it).
      yield* sql`UPDATE telegram_updates SET claimed_by = 'another term' WHERE update_id = ${stolen}`

      const handler = UpdateHandler.of({
        handle: () => Effect.void,
        writeFinished: (writes) => sessions.saveMany(writes as ReadonlyArray<FinishWrite & SessionEntry>)
      })
      const finishing = yield* makeFinishing({ inbox, term: TERM, handler, telegram: yield* Telegram })
      const finish = (updateId: number, chatId: number) =>
        finishing.finish(
          {
            updateId,
            chatId,
            arrivedAtMillis: Option.match(claimed.get(updateId)!.receivedAt, {
              onNone: () => Date.now(),
              onSome: (at) => at.epochMilliseconds
            })
          },
          idleAfter(updateId, chatId)
        )
      const results = yield* Effect.all([finish(owned, ownedChat), finish(stolen, stolenChat)], {
        concurrency: "unbounded"
      })
      assert.deepStrictEqual(results, [true, false])

      assert.strictEqual((yield* rowOf(owned))?.status, "done")
      assert.isTrue(Option.isSome(yield* sessions.get(ownedChat, ownedChat)))
      assert.isFalse(yield* isBlocked(ownedChat))
      // The deposed term wrote nothing for the update it no longer owns.
      assert.strictEqual((yield* rowOf(stolen))?.status, "processing")
      assert.strictEqual((yield* rowOf(stolen))?.claimed_by, "another term")
      assert.isTrue(Option.isNone(yield* sessions.get(stolenChat, stolenChat)))
      assert.isTrue(yield* isBlocked(stolenChat))
    }))

  it.effect("the done mark, the session and the unblocking commit together or not at all", () =>
    Effect.gen(function*() {
      const sql = yield* SqlClient
      const inbox = yield* Inbox
      const sessions = yield* ChatSessions
      const telegram = yield* Telegram
      yield* sql`CREATE TABLE IF NOT EXISTS finish_refusals (mark bigint NOT NULL)`
      const [updateId, chatId] = [83_001, 84_001]
      const claimed = yield* claimedFromBlockedChats([[updateId, chatId]])
      const arrivedAt = Option.match(claimed.get(updateId)!.receivedAt, {
        onNone: () => new Date(),
        onSome: (at) => new Date(at.epochMilliseconds)
      })
      const writeAll = (refuse: boolean) => () =>
        Effect.gen(function*() {
          yield* sessions.saveMany([idleAfter(updateId, chatId)])
          yield* telegram.unblockArrived([{ chatId, arrivedAt }])
          // A third write, last, that the database refuses (NOT NULL).
          if (refuse) yield* sql`INSERT INTO finish_refusals (mark) VALUES (NULL)`
        })
      const exit = yield* Effect.exit(inbox.completeWith(TERM, [updateId], writeAll(true)))
      assert.isTrue(exit._tag === "Failure")
      assert.strictEqual((yield* rowOf(updateId))?.status, "processing")
      assert.isTrue(Option.isNone(yield* sessions.get(chatId, chatId)))
      assert.isTrue(yield* isBlocked(chatId))

      // Without it, all three commit.
      const owned = yield* inbox.completeWith(TERM, [updateId], writeAll(false))
      assert.deepStrictEqual([...owned], [updateId])
      assert.strictEqual((yield* rowOf(updateId))?.status, "done")
      assert.isTrue(Option.isSome(yield* sessions.get(chatId, chatId)))
      assert.isFalse(yield* isBlocked(chatId))
    }))
})
