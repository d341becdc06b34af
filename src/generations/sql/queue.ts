/**
 * The fair order of `queued` generations: a user's n-th waiting generation,
 * counting the ones already at Kie (`submitting`/`submitted`), is in round n;
 * rounds go in turn, and within a round the oldest goes first. So nobody gets
 * a second one sent while someone else still waits for their first.
 */
import { Effect } from "effect"
import type { SqlClient } from "effect/sql/SqlClient"
import { decodeRows } from "./row.ts"

/** A queued generation's place in line. */
export interface QueuePosition {
  readonly id: string
  /** 1 = next to be submitted. */
  readonly position: number
}

/** Each queued generation's id, `created_at` and round. */
const rounds = (sql: SqlClient) => sql`
    SELECT q.id, q.created_at,
      row_number() OVER (PARTITION BY q.user_id ORDER BY q.created_at, q.id) + coalesce(f.n, 0) AS round
    FROM generations q
    LEFT JOIN (
      SELECT user_id, count(*) AS n FROM generations WHERE status IN ('submitting', 'submitted') GROUP BY user_id
    ) f ON f.user_id = q.user_id
    WHERE q.status = 'queued'`

/** The next `limit` queued generations in fair order, other than `excluding`. */
export const nextQueued = (sql: SqlClient, limit: number, excluding: ReadonlyArray<string>) =>
  sql`
    SELECT g.* FROM (${rounds(sql)}) r JOIN generations g USING (id)
    WHERE NOT (g.id::text = ANY(${excluding}))
    ORDER BY r.round, g.created_at, g.id
    LIMIT ${limit}`.pipe(Effect.flatMap(decodeRows))

/** Every queued generation's place in the fair order. */
export const queuePositions = (sql: SqlClient) =>
  sql<{ id: string; position: bigint }>`
    SELECT id::text AS id, row_number() OVER (ORDER BY round, created_at, id) AS position FROM (${rounds(sql)}) r`.pipe(
    Effect.map((rows): ReadonlyArray<QueuePosition> => rows.map((r) => ({ id: r.id, position: Number(r.position) })))
  )
