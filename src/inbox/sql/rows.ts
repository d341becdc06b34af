/**
 * Row decoding shared by the inbox's statements: a statement's rows are
 * checked against its row schema (a mismatch is a bug of ours, so it dies),
 * and timestamps become `DateTime.Utc` through `UtcTime`.
 */
import { DateTime, Effect, type Option, Schema } from "effect"
import * as UtcTime from "../../platform/UtcTime.ts"

/** Decodes a statement's rows with `schema`; a row that does not fit is a defect. */
export const decodeRows = <S extends Schema.Decoder<unknown>>(schema: S) => (rows: ReadonlyArray<unknown>) =>
  Schema.decodeUnknownEffect(Schema.Array(schema))(rows).pipe(Effect.orDie) as Effect.Effect<
    ReadonlyArray<S["Type"]>
  >

/** A timestamp column as UTC; `None` if the driver handed back something unreadable (never expected). */
export const timestamp = (value: unknown): Option.Option<DateTime.Utc> => UtcTime.fromUnknown(value)

/** The current time as the driver binds it. */
export const now: Effect.Effect<Date> = Effect.map(DateTime.now, DateTime.toDateUtc)
