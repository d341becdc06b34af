/**
 * Finding orphans: `pending` rows older than they should ever be (nobody
 * dispatched them), for the reconciler to report and wake the dispatcher.
 */
import { DateTime, Effect, type Option, Schema } from "effect"
import type { SqlClient } from "effect/sql/SqlClient"
import type { SqlError } from "effect/sql/SqlError"
import { Int8 } from "../../database/SqlColumns.ts"
import { decodeRows, timestamp } from "./rows.ts"

/** A pending row and when it was received. */
export interface PendingUpdate {
  readonly updateId: number
  readonly chatId: number | null
  readonly receivedAt: Option.Option<DateTime.Utc>
}

const PendingRow = Schema.Struct({ update_id: Int8, chat_id: Schema.NullOr(Int8), received_at: Schema.Unknown })

/** Up to `limit` pending rows received before `receivedBefore`, oldest first. */
export const pendingReceivedBefore = (
  sql: SqlClient,
  receivedBefore: DateTime.Utc,
  limit: number
): Effect.Effect<ReadonlyArray<PendingUpdate>, SqlError> =>
  sql`
    SELECT update_id, chat_id, received_at FROM telegram_updates
    WHERE status = 'pending' AND received_at < ${DateTime.toDateUtc(receivedBefore)}
    ORDER BY received_at, update_id
    LIMIT ${limit}`.pipe(
    Effect.flatMap(decodeRows(PendingRow)),
    Effect.map((rows) =>
      rows.map((row): PendingUpdate => ({
        updateId: row.update_id,
        chatId: row.chat_id,
        receivedAt: timestamp(row.received_at)
      }))
    )
  )
