/**
 * The group commit behind `Inbox.store`: concurrent stores share one INSERT
 * and one commit, and each caller still hears only once its own rows are
 * committed.
 *
 * When to use: only through `Inbox.store`; it is a part of its own so the
 * batching can be read (and tested) apart from the table's SQL.
 *
 * Details: the grouping is `platform/GroupedCalls.ts`'s: every store joins a
 * queue, and one writer takes everything queued (up to
 * `maxStoresPerStatement` stores) and writes it in one statement. Under load
 * that saves a round trip, a transaction and a commit per update; a store
 * that finds the writer idle is written at once. A batch that fails because
 * of its rows (not the database) is written again store by store, so one bad
 * update never fails its neighbours.
 *
 * Gotchas: a statement gets `storeTimeout` to commit. On shutdown every store
 * still queued or in hand fails with `InboxClosed`: nobody waits on a batch
 * that will never be written.
 */
import { Cause, Data, Duration, Effect, Exit, Predicate, type Scope } from "effect"
import type { TimeoutError } from "effect/Cause"
import type { SqlError } from "effect/sql/SqlError"
import { makeGroupedCalls } from "../platform/GroupedCalls.ts"

/** How long a store may wait for its commit, queueing included. */
export const storeTimeout = Duration.seconds(5)

/**
 * Statements storing updates at once: one (`platform/GroupedCalls.ts` runs
 * one call at a time). Concurrent webhooks share it (group commit): while it
 * is busy, new updates queue, and the next statement stores everything
 * queued in one commit.
 *
 * One writer measured best (`npm run bench`, 2 cores): with 8 webhook senders
 * 2,415 acks/s (1 writer) against 1,709/s (2) and 1,799/s (3); with 32 senders
 * 4,127/s, 2,961/s and 2,764/s. The single-threaded service is CPU-bound, and
 * bigger batches cost less CPU per update; 256 stores per statement still
 * allow tens of thousands per second.
 */
export const storeWriters = 1
/**
 * Stores joined in one statement at most: bounds its parameter (a webhook
 * brings one update; the poller, the only store of many, runs alone).
 */
export const maxStoresPerStatement = 256

/** Stores still queued or in hand when the inbox closes (shutdown). */
export class InboxClosed extends Data.TaggedError("InboxClosed")<{}> {}

/** Why a store failed: the database, no commit in time, or shutdown. */
export type StoreFailure = SqlError | TimeoutError | InboxClosed

/** What the writer stores: anything with an `update_id` (an update, or one routed by the inbox). */
export interface Storable {
  readonly update_id: number
}

/** The group-committed store. */
export interface StoreWriter<U extends Storable> {
  /** Queues `updates` for the next statement; succeeds, once they are committed, with how many were new. */
  readonly write: (updates: ReadonlyArray<U>) => Effect.Effect<number, StoreFailure>
  /**
   * `write` without a fiber: queues `updates` for the next statement and
   * calls `done` once with its outcome (at once with `InboxClosed` on
   * shutdown). No timeout of its own: the caller bounds its wait.
   */
  readonly writeUnsafe: (updates: ReadonlyArray<U>, done: (exit: Exit.Exit<number, StoreFailure>) => void) => void
}

/** What the writer writes with. */
export interface StoreWriterOptions<U extends Storable> {
  /**
   * One statement for any number of rows; returns the `update_id`s that were
   * new. What follows a commit (a wake-up, a NOTIFY) is its part: the writer
   * waits for it, so it must be quick.
   */
  readonly insert: (updates: ReadonlyArray<U>) => Effect.Effect<ReadonlySet<number>, SqlError>
}

/** A short reason for a failed store: the database's message, never the payload. */
export const describeStoreFailure = (cause: Cause.Cause<unknown>): string => {
  const error = Cause.squash(cause)
  if (Cause.isTimeoutError(error)) return `the database did not answer within ${Duration.format(storeTimeout)}`
  if (Predicate.isTagged(error, "InboxClosed")) return "the inbox is shutting down"
  if (Predicate.isTagged(error, "SqlError")) return (error as SqlError).message
  return "unexpected error"
}

/** Starts the writer in the current scope; closing the scope fails what is still queued. */
export const makeStoreWriter = <U extends Storable>(
  options: StoreWriterOptions<U>
): Effect.Effect<StoreWriter<U>, never, Scope.Scope> =>
  Effect.gen(function*() {
    /** Stores the stores' updates in one statement; each gets how many of its own were new. */
    const insertTogether = (stores: ReadonlyArray<ReadonlyArray<U>>) =>
      Effect.gen(function*() {
        const fresh = new Set(yield* options.insert(stores.flat()).pipe(Effect.timeout(storeTimeout)))
        // Deleting as it counts: an update_id sent twice in one batch is new once.
        return stores.map((updates) => updates.filter((update) => fresh.delete(update.update_id)).length)
      })
    const store = yield* makeGroupedCalls({ run: insertTogether, maxPerCall: maxStoresPerStatement })

    const write = (updates: ReadonlyArray<U>): Effect.Effect<number, StoreFailure> =>
      updates.length === 0
        ? Effect.succeed(0)
        : store(updates).pipe(Effect.catchTag("GroupedCallsClosed", () => Effect.fail(new InboxClosed())))

    const writeUnsafe = (updates: ReadonlyArray<U>, done: (exit: Exit.Exit<number, StoreFailure>) => void) =>
      updates.length === 0 ?
        done(Exit.succeed(0)) :
        store.offerUnsafe(
          updates,
          (exit) =>
            done(Exit.mapError(exit, (error) => error._tag === "GroupedCallsClosed" ? new InboxClosed() : error))
        )

    return { write, writeUnsafe }
  })
