/**
 * Taking back rows stuck on another term (a dead or deposed leader): the
 * reconciler returns them to `pending` so the chat goes on in order.
 *
 * Three rules, any one is enough:
 * - the claim is older than the caller's cutoff (the threshold, or the
 *   deposed-term grace: `Reconciler.ts`);
 * - the claiming term is an earlier term of the caller's own instance: the
 *   lock controller starts a term only after the previous one's leader-only
 *   services have stopped (or were given up on after `stopAfterLossTimeout`),
 *   so the grace has nothing left to wait for (the reason `own`);
 * - the claiming term's instance has no connection to this database left,
 *   neither its pool nor its lock session (`application_name`, see
 *   `leadership/LeaderTerm.ts`). A process that is gone (SIGKILL, crash, OOM)
 *   loses every connection at once, so its rows go back as soon as a new
 *   leader looks, with no grace. A leader that is alive but lost the lock (its
 *   lock session was cut or terminated) still has its pool, so its rows keep
 *   the grace that lets it stop its handlers first. A live process whose
 *   every connection was cut at once looks gone until it reconnects; it saw
 *   its lock session drop in the same instant and stops its handlers then,
 *   so what it can still do is what a killed one can: a reply already on
 *   its way may go out twice (the fault drill counts those).
 */
import { DateTime, Effect, type Option, Schema } from "effect"
import type { SqlClient } from "effect/sql/SqlClient"
import type { SqlError } from "effect/sql/SqlError"
import { Int8 } from "../../database/SqlColumns.ts"
import { instanceApplicationPrefixes } from "../../leadership/LeaderTerm.ts"
import { decodeRows, timestamp } from "./rows.ts"

/** A row taken back from the term that held it. */
export interface StuckUpdate {
  readonly updateId: number
  readonly claimedBy: string | null
  readonly claimedAt: Option.Option<DateTime.Utc>
  /**
   * Why it was taken back: its claim's `age`, its term's instance `gone`, or
   * an earlier term of this `own` instance.
   */
  readonly reason: StuckReason
}

/** Why a row was taken back (see the rules above). */
export type StuckReason = "age" | "gone" | "own"

const StuckRow = Schema.Struct({
  update_id: Int8,
  claimed_by: Schema.NullOr(Schema.String),
  claimed_at: Schema.Unknown,
  reason: Schema.Literals(["age", "gone", "own"])
})

/**
 * Returns to `pending` up to `limit` rows `processing` under any term but
 * `term` whose claim is older than `claimedBefore` (or has no claim time), or
 * whose term is over for sure (an earlier term of `term`'s instance, or one
 * whose instance has no connection left); reports them in `update_id`
 * order with who held them since when.
 */
export const requeueStuck = (
  sql: SqlClient,
  term: string,
  claimedBefore: DateTime.Utc,
  limit: number
): Effect.Effect<ReadonlyArray<StuckUpdate>, SqlError> => {
  const cutoff = DateTime.toDateUtc(claimedBefore)
  return sql`
    WITH stuck AS (
      SELECT u.update_id, u.claimed_by, u.claimed_at,
        CASE WHEN c.old_enough THEN 'age' WHEN c.instance = c.own_instance THEN 'own' ELSE 'gone' END AS reason
      FROM telegram_updates u
      CROSS JOIN LATERAL (SELECT u.claimed_at IS NULL OR u.claimed_at < ${cutoff} AS old_enough,
                                 substring(u.claimed_by from '^(.*)/[^/]*$') AS instance,
                                 substring(${term} from '^(.*)/[^/]*$') AS own_instance) c
      WHERE u.status = 'processing' AND u.claimed_by IS DISTINCT FROM ${term}
        AND (c.old_enough OR c.instance = c.own_instance OR (c.instance IS NOT NULL AND NOT EXISTS (
          SELECT 1 FROM pg_stat_activity a
          WHERE a.datid = (SELECT oid FROM pg_database WHERE datname = current_database())
            AND a.application_name IN (left(${instanceApplicationPrefixes.pool} || c.instance, 63),
                                       left(${instanceApplicationPrefixes.lockSession} || c.instance, 63)))))
      ORDER BY u.update_id
      LIMIT ${limit}
      FOR UPDATE OF u SKIP LOCKED
    )
    UPDATE telegram_updates u
    SET status = 'pending', claimed_at = NULL, claimed_by = NULL
    FROM stuck s
    WHERE u.update_id = s.update_id
    RETURNING s.update_id, s.claimed_by, s.claimed_at, s.reason`.pipe(
    Effect.flatMap(decodeRows(StuckRow)),
    Effect.map((rows) =>
      rows
        .map((row): StuckUpdate => ({
          updateId: row.update_id,
          claimedBy: row.claimed_by,
          claimedAt: timestamp(row.claimed_at),
          reason: row.reason
        }))
        .sort((a, b) => a.updateId - b.updateId)
    )
  )
}
