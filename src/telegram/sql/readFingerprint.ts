/** Reading the fingerprint of the webhook we last set. */
import { Effect, Option } from "effect"
import type { SqlClient } from "effect/sql/SqlClient"

/** The stored fingerprint, if a webhook was ever set. */
export const readFingerprint = (sql: SqlClient) =>
  sql<{ fingerprint: string }>`SELECT fingerprint FROM telegram_webhook WHERE id = 1`.pipe(
    Effect.map((rows) => Option.fromNullishOr(rows[0]?.fingerprint))
  )
