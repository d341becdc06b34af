/**
 * Claiming pending updates for a leadership term.
 *
 * Details: rows are taken in `update_id` order, and a claim counts an
 * attempt. A pending row is claimable only while no row of its chat is
 * `processing` under another term, so a chat's order survives failover: its
 * later updates wait until the reconciler hands the dead leader's row back.
 *
 * Fairness: a chat holds at most `perChat` rows in `processing` at once (the
 * earliest of its pending ones). A chat with a backlog of hundreds therefore
 * takes a few places in a claim, and every other chat's updates are claimed
 * beside them, not after them.
 *
 * Gotchas: the per-chat rank is taken over the earliest `CLAIM_WINDOW`
 * pending rows (`inbox_pending_window`, migration 0012, which also says why
 * the claim reads through functions), so a claim reads at most that many
 * however long the backlog. The rank is exact for every row in the window,
 * because a chat's earlier rows come earlier in it. A chat whose own backlog
 * fills the whole window holds the claims back until it drains below it (the
 * intake's flood gate keeps one chat's backlog far shorter). Two claims at
 * once (a deposed leader's last one) cannot take a row twice: the UPDATE
 * re-checks `status = 'pending'` on the row it locks. The UPDATE finds its
 * rows by primary key (`= ANY(ARRAY(…))`): joined with the candidates, the
 * planner, which guesses 1,000 rows for each read function, could hash every
 * pending row of a backlog instead; its status re-check is written
 * `(u.status = 'pending') IS TRUE` so that no partial index of pending rows
 * looks cheaper (`sql/finish.ts` says why).
 */
import { type DateTime, Effect, type Option, Schema } from "effect"
import type { SqlClient } from "effect/sql/SqlClient"
import type { SqlError } from "effect/sql/SqlError"
import { Int8 } from "../../database/SqlColumns.ts"
import { decodeRows, now, timestamp } from "./rows.ts"

/**
 * Rows of one chat a term holds in `processing` at most: enough to run a
 * chat's updates back to back, small beside the claimed updates in memory.
 */
export const CLAIMS_PER_CHAT = 4

/**
 * Pending rows a claim reads at most, the earliest by `update_id`: bounds a
 * claim's cost in a backlog (after an outage every claim would otherwise read
 * all of it), and is four times the most rows a claim takes (the
 * dispatcher's batch of 64).
 *
 * Why not more: a claim costs about 3 µs of the database's CPU per row in
 * its window, and the window is full exactly when the dispatcher is behind.
 * With 2,048, a dispatcher running a second behind at 1,000 updates/s spent
 * 3.1 ms of database CPU per claim, a third of a core that the rest of the
 * machine needed to catch up (`docs/benchmarks.md`).
 */
export const CLAIM_WINDOW = 256

/** An update this leadership term now owns. */
export interface ClaimedUpdate {
  readonly updateId: number
  readonly chatId: number | null
  readonly kind: string
  readonly payload: unknown
  /** Handler runs started so far, this one included. */
  readonly attempts: number
  /** `None` if the stored value could not be read (never expected). */
  readonly receivedAt: Option.Option<DateTime.Utc>
}

const ClaimedRow = Schema.Struct({
  update_id: Int8,
  chat_id: Schema.NullOr(Int8),
  kind: Schema.String,
  payload: Schema.Unknown,
  attempts: Schema.Int,
  received_at: Schema.Unknown
})

/**
 * Claims up to `limit` pending updates in `update_id` order for `term`,
 * skipping chats with an update still `processing` under another term and
 * taking at most `perChat` rows in `processing` per chat.
 */
export const claim = (
  sql: SqlClient,
  term: string,
  limit: number,
  perChat: number
): Effect.Effect<ReadonlyArray<ClaimedUpdate>, SqlError> =>
  Effect.gen(function*() {
    const claimedAt = yield* now
    const rows = yield* sql`
      WITH busy AS (
        SELECT chat_id, count(*) AS held, bool_or(claimed_by IS DISTINCT FROM ${term}) AS elsewhere
        FROM inbox_processing_rows()
        GROUP BY chat_id
      ),
      ranked AS (
        SELECT update_id, chat_id, row_number() OVER (PARTITION BY chat_id ORDER BY update_id) AS place
        FROM inbox_pending_window(${CLAIM_WINDOW})
      ),
      candidates AS (
        SELECT r.update_id
        FROM ranked r LEFT JOIN busy b ON b.chat_id = r.chat_id
        WHERE r.chat_id IS NULL
          OR (b.chat_id IS NULL AND r.place <= ${perChat})
          OR (NOT b.elsewhere AND r.place + b.held <= ${perChat})
        ORDER BY r.update_id
        LIMIT ${limit}
      )
      UPDATE telegram_updates u
      SET status = 'processing', claimed_at = ${claimedAt}, claimed_by = ${term}, attempts = u.attempts + 1
      WHERE u.update_id = ANY(ARRAY(SELECT update_id FROM candidates)) AND (u.status = 'pending') IS TRUE
      RETURNING u.update_id, u.chat_id, u.kind, u.payload, u.attempts, u.received_at`.pipe(
      Effect.flatMap(decodeRows(ClaimedRow))
    )
    return rows
      .map((row): ClaimedUpdate => ({
        updateId: row.update_id,
        chatId: row.chat_id,
        kind: row.kind,
        payload: row.payload,
        attempts: row.attempts,
        receivedAt: timestamp(row.received_at)
      }))
      .sort((a, b) => a.updateId - b.updateId)
  })
