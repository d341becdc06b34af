/**
 * Schemas for PostgreSQL columns as `@effect/sql-pg` returns them, shared by
 * the table modules. `bigint` (int8) columns arrive as JS `bigint`.
 */
import { Schema, SchemaTransformation } from "effect"

/**
 * An int8 holding a Telegram id or a count, as a JS number. Telegram
 * documents its ids as fitting in 52 bits, so no precision is lost.
 */
export const Int8 = Schema.BigInt.pipe(
  Schema.decodeTo(Schema.Int, SchemaTransformation.transform({ decode: (b) => Number(b), encode: (n) => BigInt(n) }))
)

/** A bigserial primary key as a decimal string: our ids never go through floating point. */
export const Int8Id = Schema.BigInt.pipe(
  Schema.decodeTo(Schema.String, SchemaTransformation.transform({ decode: (b) => b.toString(), encode: (s) => BigInt(s) }))
)
