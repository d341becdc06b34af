/**
 * The group commit behind `Inbox.store`: concurrent stores share one INSERT
 * and one commit, and each caller still hears only once its own rows are
 * committed.
 *
 * When to use: only through `Inbox.store`; it is a part of its own so the
 * batching can be read (and tested) apart from the table's SQL.
 *
 * Details: every store joins a queue; each of `storeWriters` writers takes
 * everything queued (up to `maxStoresPerStatement` stores) and writes it in
 * one statement. Under load that saves a round trip, a transaction and a
 * commit per update; a store that finds a writer idle is written at once. A
 * batch that fails because of its rows (not the database) is written again
 * store by store, so one bad update never fails its neighbours.
 *
 * Gotchas: a statement gets `storeTimeout` to commit. On shutdown every store
 * still queued or in hand fails with `InboxClosed`: nobody waits on a batch
 * that will never be written.
 */
import { Cause, Data, Deferred, Duration, Effect, Exit, Predicate, Queue, type Scope } from "effect"
import type { TimeoutError } from "effect/Cause"
import type { SqlError } from "effect/sql/SqlError"

/** How long a store may wait for its commit, queueing included. */
export const storeTimeout = Duration.seconds(5)

/**
 * Statements storing updates at once. Concurrent webhooks share them (group
 * commit): while they are busy, new updates queue, and the next free writer
 * stores everything queued in one statement and one commit.
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
const closedExit = Exit.fail(new InboxClosed())

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
}

/** What the writer writes with. */
export interface StoreWriterOptions<U extends Storable> {
  /** One statement for any number of rows; returns the `update_id`s that were new. */
  readonly insert: (updates: ReadonlyArray<U>) => Effect.Effect<ReadonlySet<number>, SqlError>
  /** Runs after a statement stored anything new (must be quick: the writer waits for it). */
  readonly onStored: Effect.Effect<void>
}

interface StoreRequest<U extends Storable> {
  readonly updates: ReadonlyArray<U>
  readonly result: Deferred.Deferred<number, StoreFailure>
}

/**
 * A failure caused by the rows themselves (SQLSTATE class 22, data
 * exception, or 23, integrity violation), not by the database being
 * unavailable: worth retrying each request of the batch alone.
 */
const isRowFault = (cause: Cause.Cause<unknown>): boolean => {
  const error = Cause.squash(cause)
  if (!Predicate.isTagged(error, "SqlError")) return false
  const code = ((error as SqlError).reason.cause as { code?: unknown } | undefined)?.code
  return typeof code === "string" && (code.startsWith("22") || code.startsWith("23"))
}

/** A short reason for a failed store: the database's message, never the payload. */
export const describeStoreFailure = (cause: Cause.Cause<unknown>): string => {
  const error = Cause.squash(cause)
  if (Cause.isTimeoutError(error)) return `the database did not answer within ${Duration.format(storeTimeout)}`
  if (Predicate.isTagged(error, "InboxClosed")) return "the inbox is shutting down"
  if (Predicate.isTagged(error, "SqlError")) return (error as SqlError).message
  return "unexpected error"
}

/** Starts the writers in the current scope; closing the scope fails what is still queued. */
export const makeStoreWriter = <U extends Storable>(
  options: StoreWriterOptions<U>
): Effect.Effect<StoreWriter<U>, never, Scope.Scope> =>
  Effect.gen(function*() {
    const requests = yield* Queue.unbounded<StoreRequest<U>>()

    const finish = (request: StoreRequest<U>, exit: Exit.Exit<number, StoreFailure>) =>
      Deferred.doneUnsafe(request.result, exit)

    /** Stores the requests' updates together; on a fault of the rows themselves, each request alone. */
    const writeBatch = (batch: ReadonlyArray<StoreRequest<U>>): Effect.Effect<void> =>
      Effect.gen(function*() {
        const exit = yield* Effect.exit(
          options.insert(batch.flatMap((request) => request.updates)).pipe(Effect.timeout(storeTimeout))
        )
        if (Exit.isSuccess(exit)) {
          const fresh = new Set(exit.value)
          const anyNew = fresh.size > 0
          // Deleting as it counts: an update_id sent twice in one batch is new once.
          for (const request of batch) {
            finish(request, Exit.succeed(request.updates.filter((update) => fresh.delete(update.update_id)).length))
          }
          if (anyNew) yield* options.onStored
          return
        }
        if (batch.length > 1 && isRowFault(exit.cause)) {
          // One bad row must not cost its neighbours their 200.
          for (const request of batch) yield* writeBatch([request])
          return
        }
        for (const request of batch) finish(request, Exit.failCause(exit.cause))
      }).pipe(
        // Interrupted (shutdown): nobody may wait on a batch that will not finish.
        Effect.onInterrupt(() => Effect.sync(() => batch.forEach((request) => finish(request, closedExit))))
      )

    yield* Queue.takeBetween(requests, 1, maxStoresPerStatement).pipe(
      Effect.flatMap(writeBatch),
      Effect.forever,
      Effect.forkScoped,
      Effect.replicateEffect(storeWriters)
    )
    yield* Effect.addFinalizer(() =>
      Queue.clear(requests).pipe(
        Effect.map((left) => left.forEach((request) => finish(request, closedExit))),
        Effect.andThen(Queue.shutdown(requests)),
        Effect.ignore
      )
    )

    const write = (updates: ReadonlyArray<U>): Effect.Effect<number, StoreFailure> =>
      Effect.gen(function*() {
        if (updates.length === 0) return 0
        const result = yield* Deferred.make<number, StoreFailure>()
        if (!(yield* Queue.offer(requests, { updates, result }))) return yield* new InboxClosed()
        return yield* Deferred.await(result)
      })

    return { write }
  })
