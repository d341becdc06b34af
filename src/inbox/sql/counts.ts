/**
 * The inbox's health counts, read from the table (so they are right on
 * PASSIVE instances too): what is unfinished, processing, dead, and the
 * oldest pending update.
 */
import { type DateTime, Effect, Option, Schema } from "effect"
import type { SqlClient } from "effect/sql/SqlClient"
import type { SqlError } from "effect/sql/SqlError"
import { Int8 } from "../../database/SqlColumns.ts"
import { decodeRows, timestamp } from "./rows.ts"

/** The table's state for `/health` and `/metrics`. */
export interface InboxStats {
  /** Stored and not finished: pending + processing. */
  readonly queueDepth: number
  readonly processing: number
  readonly dead: number
  readonly oldestPendingReceivedAt: Option.Option<DateTime.Utc>
}

const StatsRow = Schema.Struct({
  unfinished: Int8,
  processing: Int8,
  dead: Int8,
  oldest_pending: Schema.Unknown
})

/** Counts the table's rows by state, in one statement. */
export const stats = (sql: SqlClient): Effect.Effect<InboxStats, SqlError> =>
  sql`
    SELECT
      (SELECT count(*) FROM telegram_updates WHERE status IN ('pending', 'processing')) AS unfinished,
      (SELECT count(*) FROM telegram_updates WHERE status = 'processing') AS processing,
      (SELECT count(*) FROM telegram_updates WHERE status = 'dead') AS dead,
      (SELECT min(received_at) FROM telegram_updates WHERE status = 'pending') AS oldest_pending`.pipe(
    Effect.flatMap(decodeRows(StatsRow)),
    Effect.map(([row]): InboxStats => ({
      queueDepth: row?.unfinished ?? 0,
      processing: row?.processing ?? 0,
      dead: row?.dead ?? 0,
      oldestPendingReceivedAt: row === undefined ? Option.none() : timestamp(row.oldest_pending)
    }))
  )
