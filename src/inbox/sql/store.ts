/**
 * Storing updates: one INSERT for any number of rows, duplicates ignored.
 *
 * Details: every row travels in one text parameter (a JSON array unpacked by
 * `jsonb_to_recordset`): no per-column arrays, whose all-null columns the
 * driver cannot type, and one round trip for any batch size. The group commit
 * in `StoreWriter.ts` decides which updates share a statement; the bench
 * measures this very statement on its own.
 */
import { Effect } from "effect"
import type { SqlClient } from "effect/sql/SqlClient"
import type { SqlError } from "effect/sql/SqlError"
import { routingOf, type UpdateEnvelope } from "../../telegram/TelegramUpdate.ts"
import { now } from "./rows.ts"

/** jsonb refuses `\u0000`; Telegram text never needs it, so it becomes U+FFFD. */
const toJsonText = (payload: unknown): string =>
  JSON.stringify(
    payload,
    (_key, value) =>
      typeof value === "string" && value.includes("\u0000") ? value.replaceAll("\u0000", "\uFFFD") : value
  )

/** The statement's one parameter besides the time: every row, routed, as JSON text. */
const rowsJsonOf = (updates: ReadonlyArray<UpdateEnvelope>): string =>
  toJsonText(updates.map((update) => {
    const routing = routingOf(update)
    return {
      update_id: update.update_id,
      chat_id: routing.chatId,
      user_id: routing.userId,
      kind: routing.kind,
      payload: update
    }
  }))

/**
 * Inserts `updates` as `pending`, received now, skipping `update_id`s already
 * stored; returns the `update_id`s that were new.
 */
export const storeUpdates = (
  sql: SqlClient,
  updates: ReadonlyArray<UpdateEnvelope>
): Effect.Effect<Set<number>, SqlError> =>
  Effect.gen(function*() {
    const receivedAt = yield* now
    const rows = yield* sql<{ update_id: unknown }>`
      INSERT INTO telegram_updates (update_id, chat_id, user_id, kind, payload, received_at)
      SELECT r.update_id, r.chat_id, r.user_id, r.kind, r.payload, ${receivedAt}
      FROM jsonb_to_recordset(${rowsJsonOf(updates)}::jsonb)
        AS r(update_id bigint, chat_id bigint, user_id bigint, kind text, payload jsonb)
      ON CONFLICT (update_id) DO NOTHING
      RETURNING update_id`
    return new Set(rows.map((row) => Number(row.update_id)))
  })
