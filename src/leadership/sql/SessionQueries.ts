/**
 * What the statements in this folder run on: one connection that runs a
 * statement and decodes its rows. `LockSession` is the one implementation.
 */
import type { Effect, Option, Schema } from "effect"

/** Runs statements on one connection; `E` is how a statement fails. */
export interface SessionQueries<E> {
  /** Runs one statement and decodes its first row (fails if there is none). */
  readonly first: <A>(sql: string, row: Schema.Decoder<A>) => Effect.Effect<A, E>
  /** Runs one statement and decodes all its rows. */
  readonly all: <A>(sql: string, row: Schema.Decoder<A>) => Effect.Effect<ReadonlyArray<A>, E>
}

/** Runs a statement that may block for long (a lock wait); `LockSession` implements it. */
export interface BlockingQueries<E> {
  /** Its first row; `None` when the server's `lock_timeout` ended the wait. */
  readonly blocking: <A>(sql: string, row: Schema.Decoder<A>) => Effect.Effect<Option.Option<A>, E>
}
