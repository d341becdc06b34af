/**
 * Schemas for PostgreSQL columns as `@effect/sql-pg` returns them, the
 * int8 array parameter and the migration helper, shared by the table
 * modules. `bigint` (int8) columns arrive as JS `bigint`.
 */
import { Effect, Schema, SchemaTransformation } from "effect"
import { SqlClient } from "effect/sql/SqlClient"
import type { SqlError } from "effect/sql/SqlError"

/**
 * An int8 holding a Telegram id or a count, as a JS number. Telegram
 * documents its ids as fitting in 52 bits, so no precision is lost.
 */
export const Int8 = Schema.BigInt.pipe(
  Schema.decodeTo(Schema.Int, SchemaTransformation.transform({ decode: (b) => Number(b), encode: (n) => BigInt(n) }))
)

/**
 * Integer ids (Telegram's chat, user and update ids) as an `int8[]`
 * parameter, e.g. for `chat_id = ANY(${int8Array(ids)})`.
 *
 * Why: the driver types a JS number by its size (int4 when it fits in 32
 * bits, int8 when not) and refuses an array whose elements got different
 * types. Telegram's ids go up to 52 bits, so a batch of chats easily mixes
 * both; passed as plain numbers, such a batch fails the whole statement.
 */
export const int8Array = (ids: Iterable<number>): Array<bigint> => Array.from(ids, (id) => BigInt(id))

/** A bigserial primary key as a decimal string: our ids never go through floating point. */
export const Int8Id = Schema.BigInt.pipe(
  Schema.decodeTo(
    Schema.String,
    SchemaTransformation.transform({ decode: (b) => b.toString(), encode: (s) => BigInt(s) })
  )
)

/**
 * A schema migration made of DDL statements, run in the order given, each as
 * written (no parameters: PostgreSQL takes none in DDL).
 *
 * When to use: every table module's migrations, so each is just its DDL text
 * (`export const migration = ddl(\`CREATE TABLE ...\`, \`CREATE INDEX ...\`)`).
 *
 * Gotchas: an applied migration never changes; write its statements out in
 * full rather than building them from constants that may change later.
 */
export const ddl = (...statements: ReadonlyArray<string>): Effect.Effect<void, SqlError, SqlClient> =>
  Effect.gen(function*() {
    const sql = yield* SqlClient
    for (const statement of statements) yield* sql.unsafe(statement)
  })
