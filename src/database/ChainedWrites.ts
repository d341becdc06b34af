/**
 * Chained writes: one data-modifying statement (the head) and writes of other
 * modules that depend on the rows it changed, run as ONE autocommit statement
 * with data-modifying CTEs (`WITH head AS (… RETURNING …), write_0 AS (…)
 * SELECT …`). One round trip and one commit instead of BEGIN, a statement per
 * write and COMMIT, and still all or nothing: the statement commits whole or
 * not at all.
 *
 * When to use: a module owns a row's fate (the inbox marking an update done)
 * and other modules must write something only for the rows it changed (the
 * chat's new state, the chat's blocked flag), without the owner importing
 * them: each writer hands over a `ChainedWrite`, SQL of its own that reads the
 * head's rows from the relation it is given.
 *
 * Details: each write's statement is a CTE; it must be an INSERT, UPDATE or
 * DELETE that restricts itself to the head's rows (`WHERE … IN (SELECT … FROM
 * ${input})`), or it writes regardless of the head. A write that wants to know
 * what it changed ends in `RETURNING` and gives `returned`, called after the
 * commit with those rows (decoded from JSON: an int8 arrives as a number).
 *
 * Gotchas: every CTE sees the same snapshot of the database, so no write sees
 * another's changes or the head's (only the head's RETURNING rows); two
 * writes must not change the same row. An ON CONFLICT DO UPDATE must not meet
 * one row twice in its own input (SQLSTATE 21000): dedupe in SQL, after the
 * restriction to the head's rows. A failure of any write fails (and rolls
 * back) the whole statement, the head included.
 */
import { Effect } from "effect"
import type { SqlClient } from "effect/sql/SqlClient"
import type { SqlError } from "effect/sql/SqlError"
import type { Fragment } from "effect/sql/Statement"

/** A write that depends on the rows the head statement changed (see the module doc). */
export interface ChainedWrite {
  /** The write's statement, given the relation holding the head's RETURNING rows. */
  readonly statement: (input: Fragment) => Fragment
  /** With a `RETURNING` statement: gets its rows once the statement committed. Must not fail. */
  readonly returned?: (rows: ReadonlyArray<unknown>) => Effect.Effect<void>
}

/** The name of the head's relation and the writes' CTEs (plain identifiers, nothing to quote). */
const HEAD = "head"
const writeName = (i: number) => `write_${i}`

/**
 * Runs `head` (a data-modifying statement ending in `RETURNING`) and `writes`
 * as one statement; returns the head's rows, decoded from JSON. Without
 * writes, `head` runs alone, as it is.
 */
export const runChained = (
  sql: SqlClient,
  head: Fragment,
  writes: ReadonlyArray<ChainedWrite>
): Effect.Effect<ReadonlyArray<unknown>, SqlError> => {
  if (writes.length === 0) return sql<object>`${head}`
  const input = sql.literal(HEAD)
  const ctes = writes.map((write, i) => sql`, ${sql.literal(writeName(i))} AS (${write.statement(input)})`)
  const reports = writes.flatMap((write, i) =>
    write.returned === undefined
      ? []
      : [sql` UNION ALL SELECT ${sql.literal(String(i))}, to_jsonb(w) FROM ${sql.literal(writeName(i))} w`]
  )
  return Effect.gen(function*() {
    const rows = yield* sql<{ write: number; row: unknown }>`
      WITH ${input} AS (${head})${sql.join("", false)(ctes)}
      SELECT -1 AS write, to_jsonb(h) AS row FROM ${input} h${sql.join("", false)(reports)}`
    const headRows: Array<unknown> = []
    const byWrite = new Map<number, Array<unknown>>()
    for (const { row, write } of rows) {
      if (write < 0) headRows.push(row)
      else byWrite.set(write, [...(byWrite.get(write) ?? []), row])
    }
    for (const [i, returnedRows] of byWrite) yield* writes[i]!.returned!(returnedRows)
    return headRows
  })
}
