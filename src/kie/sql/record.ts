/**
 * Storing a callback, idempotently: the first trusted callback of a task is
 * kept; an untrusted one is kept only as a hint until a trusted one comes;
 * repeats only count.
 *
 * Details: the row is found by task id, or, when createTask's answer was lost
 * (`KieCreateTaskUncertain`), by the callback's `ref` on a row without a task
 * id. A callback is trusted when its signature was verified or it carries the
 * row's ref. The row is locked for the decision (`FOR UPDATE`), and the NOTIFY
 * is sent in the same transaction, so listeners hear of it once it is
 * committed. A callback for a task we never created is answered after one
 * indexed read, without a transaction or a row lock.
 *
 * | stored before  | this callback | outcome     |
 * | -------------- | ------------- | ----------- |
 * | no row         | any           | `unknown`   |
 * | no callback    | trusted       | `stored`    |
 * | no callback    | untrusted     | `hint`      |
 * | a hint         | trusted       | `stored`    |
 * | a hint         | untrusted     | `duplicate` |
 * | a trusted one  | any           | `duplicate` |
 */
import type { PgClient } from "@effect/sql-pg"
import { Effect } from "effect"
import type { SqlError } from "effect/sql/SqlError"
import { notify } from "./notify.ts"

/** A decoded callback to store. */
export interface RecordCallback {
  readonly taskId: string
  readonly ref: string | undefined
  readonly state: "success" | "fail"
  readonly data: Readonly<Record<string, unknown>>
  readonly signatureVerified: boolean
}

/** What storing a callback did. */
export type RecordOutcome =
  /** A trusted callback was stored and subscribers are to be told. */
  | "stored"
  /** An untrusted callback was stored as a hint and subscribers are to be told. */
  | "hint"
  /** The task already had a callback at least as trustworthy; only counted. */
  | "duplicate"
  /** No task of ours has this id (or ref): ignored. */
  | "unknown"

interface RegistryRow {
  readonly ref: string
  readonly task_id: string | null
  readonly callback_trusted: boolean | null
}

/**
 * Whether a row may match `callback` (by task id, or by ref on a row without
 * one): one indexed read outside any transaction. Anyone can POST callbacks,
 * so one for a task we never created must cost no more than this.
 */
const mayMatch = (pg: PgClient.PgClient, callback: RecordCallback): Effect.Effect<boolean, SqlError> => {
  const byRef = callback.ref === undefined ? pg`false` : pg`(ref = ${callback.ref} AND task_id IS NULL)`
  return Effect.map(
    pg`SELECT 1 FROM kie_tasks WHERE task_id = ${callback.taskId} OR ${byRef} LIMIT 1`,
    (rows) => rows.length > 0
  )
}

/**
 * Stores `callback` in one transaction (NOTIFY included); see the table
 * above. A callback no row matches is `unknown` without a transaction.
 */
export const record = (pg: PgClient.PgClient, callback: RecordCallback): Effect.Effect<RecordOutcome, SqlError> =>
  Effect.flatMap(
    mayMatch(pg, callback),
    (known) => known ? recordMatched(pg, callback) : Effect.succeed("unknown" as const)
  )

/** The decision of the table above, with the row locked. */
const recordMatched = (pg: PgClient.PgClient, callback: RecordCallback): Effect.Effect<RecordOutcome, SqlError> =>
  pg.withTransaction(Effect.gen(function*() {
    let rows = yield* pg<RegistryRow>`
      SELECT ref, task_id, callback_trusted FROM kie_tasks WHERE task_id = ${callback.taskId} FOR UPDATE
    `
    if (rows.length === 0 && callback.ref !== undefined) {
      // The createTask answer was lost (KieCreateTaskUncertain): the ref finds the row.
      rows = yield* pg<RegistryRow>`
        SELECT ref, task_id, callback_trusted FROM kie_tasks
        WHERE ref = ${callback.ref} AND task_id IS NULL FOR UPDATE
      `
    }
    const row = rows[0]
    if (row === undefined) return "unknown" as const
    const trusted = callback.signatureVerified || (callback.ref !== undefined && callback.ref === row.ref)
    if (row.callback_trusted === true || (row.callback_trusted === false && !trusted)) {
      yield* pg`
        UPDATE kie_tasks SET callback_count = callback_count + 1, callback_last_at = now() WHERE ref = ${row.ref}
      `
      return "duplicate" as const
    }
    yield* pg`
      UPDATE kie_tasks SET
        task_id = ${callback.taskId},
        callback_state = ${callback.state},
        callback_data = ${pg.json(callback.data)},
        callback_trusted = ${trusted},
        callback_count = callback_count + 1,
        callback_received_at = now(),
        callback_last_at = now()
      WHERE ref = ${row.ref}
    `
    yield* notify(pg, callback.taskId)
    return trusted ? "stored" as const : "hint" as const
  }))
