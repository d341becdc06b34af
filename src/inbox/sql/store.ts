/**
 * Storing updates: one INSERT for any number of rows, duplicates ignored;
 * on the ACTIVE instance the same INSERT can claim some of them at once.
 *
 * Details: every row travels in one text parameter (a JSON array unpacked by
 * `jsonb_to_recordset`): no per-column arrays, whose all-null columns the
 * driver cannot type, and one round trip for any batch size. The group commit
 * in `StoreWriter.ts` decides which updates share a statement; the bench
 * measures this very statement on its own.
 *
 * Claimed on storing (`storeClaimingUpdates`): the ACTIVE instance's
 * dispatcher, when it has room, takes its own webhook's updates straight from
 * the INSERT, which writes them `processing` under its term (attempts 1), as a
 * claim would have: no claim statement and no second write of the row. The
 * claim's order rule holds: a row is claimed on storing only if no row of its
 * chat is `pending` or `processing` when the statement runs (so nothing of the
 * chat can come before it), and the caller offers at most one row per chat in
 * a statement (the statement does not see its own rows). Everything else is
 * stored `pending` for the claim loop, as before.
 *
 * Gotchas: the chat probe is a `LIMIT 1` lateral join, written with the
 * predicate of `telegram_updates_unfinished_chat` (migration 0014), so that
 * it is one index probe per offered row whatever the statistics say: as a
 * `NOT EXISTS` inside the `CASE`s, PostgreSQL copied it into each of them and
 * could run it as a hashed subplan reading every unfinished row of the table
 * once per statement (see the migration for the numbers).
 */
import { Effect } from "effect"
import type { SqlClient } from "effect/sql/SqlClient"
import type { SqlError } from "effect/sql/SqlError"
import { type Routing, routingOf, type UpdateEnvelope } from "../../telegram/TelegramUpdate.ts"
import { now } from "./rows.ts"

/**
 * An update with its routing, worked out once: the flood gate needs the
 * routing before the row is written, and `routingOf` decodes a schema.
 */
export interface RoutedUpdate {
  readonly update_id: number
  readonly update: UpdateEnvelope
  readonly routing: Routing
}

/** `update` with its routing. */
export const routed = (update: UpdateEnvelope): RoutedUpdate => ({
  update_id: update.update_id,
  update,
  routing: routingOf(update)
})

const replaceNul = (_key: string, value: unknown) =>
  typeof value === "string" && value.includes("\u0000") ? value.replaceAll("\u0000", "\uFFFD") : value

/**
 * jsonb refuses `\u0000`; Telegram text never needs it, so it becomes U+FFFD.
 * `JSON.stringify` writes a NUL as the escape `\u0000`, so the slower pass
 * with a replacer runs only when that escape is in the text: never for the
 * webhook's and the poller's updates (`telegram/SafeJson.ts` cleaned them),
 * only for payloads stored directly (tests, the bench). A literal backslash
 * before `u0000` matches too; the pass then replaces nothing, as it should.
 */
const toJsonText = (payload: unknown): string => {
  const text = JSON.stringify(payload)
  return text.includes("\\u0000") ? JSON.stringify(payload, replaceNul) : text
}

/**
 * The statement's one parameter besides the time: every row, routed, as JSON
 * text; the rows in `offered` carry `"offer": true` (absent: null).
 */
const rowsJsonOf = (rows: ReadonlyArray<RoutedUpdate>, offered?: ReadonlySet<number>): string =>
  toJsonText(rows.map(({ routing, update }) => ({
    update_id: update.update_id,
    chat_id: routing.chatId,
    user_id: routing.userId,
    kind: routing.kind,
    ...(offered?.has(update.update_id) ? { offer: true } : {}),
    payload: update
  })))

/**
 * Inserts `updates` as `pending`, received now, skipping `update_id`s already
 * stored; returns the `update_id`s that were new.
 */
export const storeUpdates = (
  sql: SqlClient,
  updates: ReadonlyArray<UpdateEnvelope>
): Effect.Effect<Set<number>, SqlError> => storeRoutedUpdates(sql, updates.map(routed))

/** `storeUpdates` for updates already routed (the inbox routes them for its flood gate). */
export const storeRoutedUpdates = (
  sql: SqlClient,
  updates: ReadonlyArray<RoutedUpdate>
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

/** What `storeClaimingUpdates` stored: the new rows, and which of them it claimed. */
export interface StoredAndClaimed {
  /** The `update_id`s that were new (claimed or `pending`). */
  readonly fresh: Set<number>
  /** The new rows stored `processing` under the term, at `receivedAt`. */
  readonly claimed: Set<number>
  /** When the rows were received (the statement's time), which is also their claim's. */
  readonly receivedAt: Date
}

/**
 * The statement of `storeClaimingUpdates`, unrun: exposed so a test can ask
 * the database how it runs it (`EXPLAIN`).
 */
export const claimingInsert = (
  sql: SqlClient,
  updates: ReadonlyArray<RoutedUpdate>,
  term: string,
  offered: ReadonlySet<number>,
  receivedAt: Date
) => sql<{ update_id: unknown; claimed: boolean }>`
    INSERT INTO telegram_updates
      (update_id, chat_id, user_id, kind, payload, received_at, status, attempts, claimed_at, claimed_by)
    SELECT r.update_id, r.chat_id, r.user_id, r.kind, r.payload, ${receivedAt},
      CASE WHEN c.claim THEN 'processing' ELSE 'pending' END,
      CASE WHEN c.claim THEN 1 ELSE 0 END,
      CASE WHEN c.claim THEN ${receivedAt}::timestamptz END,
      CASE WHEN c.claim THEN ${term} END
    FROM jsonb_to_recordset(${rowsJsonOf(updates, offered)}::jsonb)
      AS r(update_id bigint, chat_id bigint, user_id bigint, kind text, offer boolean, payload jsonb)
    LEFT JOIN LATERAL (
      SELECT true FROM telegram_updates u
      WHERE r.offer AND u.chat_id = r.chat_id AND u.status <> 'done' AND u.status <> 'dead'
      LIMIT 1
    ) AS busy(found) ON true
    CROSS JOIN LATERAL (SELECT r.offer IS TRUE AND busy.found IS NULL) AS c(claim)
    ON CONFLICT (update_id) DO NOTHING
    RETURNING update_id, status = 'processing' AS claimed`

/**
 * `storeRoutedUpdates`, claiming for `term` those of `offered` (at most one
 * per chat: the caller's rule) whose chat has no row `pending` or
 * `processing`; the rest are stored `pending`.
 */
export const storeClaimingUpdates = (
  sql: SqlClient,
  updates: ReadonlyArray<RoutedUpdate>,
  term: string,
  offered: ReadonlySet<number>
): Effect.Effect<StoredAndClaimed, SqlError> =>
  Effect.gen(function*() {
    const receivedAt = yield* now
    const rows = yield* claimingInsert(sql, updates, term, offered, receivedAt)
    const fresh = new Set<number>()
    const claimed = new Set<number>()
    for (const row of rows) {
      const id = Number(row.update_id)
      fresh.add(id)
      if (row.claimed === true) claimed.add(id)
    }
    return { fresh, claimed, receivedAt }
  })
