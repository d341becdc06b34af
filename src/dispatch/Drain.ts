/**
 * Stopping the dispatcher when its leadership term ends.
 *
 * Details: a graceful release (`drain`) stops claiming, lets running handlers
 * finish within SHUTDOWN_TIMEOUT_MS, interrupts the rest and hands every row
 * this term still holds back to `pending`. A lost leadership (`stopAtOnce`)
 * stops everything at once and writes nothing: the rows stay `processing`
 * until the next leader's reconciler returns them, and meanwhile the claim
 * rule keeps those chats' later updates waiting, so order holds.
 *
 * Gotchas: the release also covers rows a claim returned while it was being
 * stopped (they are in no list in memory); a release that fails is left to
 * the next leader's reconciler.
 */
import { Duration, Effect, FiberSet, Option } from "effect"
import type { InboxShape } from "../inbox/Inbox.ts"
import type { InFlight } from "./InFlight.ts"

/** What stopping needs: the term's fibers and what it holds. */
export interface DrainOptions {
  readonly inbox: InboxShape
  readonly term: string
  readonly inFlight: InFlight
  /** The claim and listen loops. */
  readonly background: FiberSet.FiberSet
  /** The chats' fibers. */
  readonly chatFibers: FiberSet.FiberSet
  readonly shutdownTimeout: Duration.Duration
}

/** Graceful release: no new runs, running ones finish (bounded), the rest goes back to `pending`. */
export const drain = (options: DrainOptions): Effect.Effect<void> =>
  Effect.gen(function*() {
    const { inFlight } = options
    inFlight.startDraining()
    yield* FiberSet.clear(options.background)
    if (inFlight.running() > 0) {
      yield* Effect.logInfo(`[DISPATCH] draining: waiting for ${inFlight.running()} running handler(s)`)
      if (!(yield* inFlight.awaitIdle(options.shutdownTimeout))) {
        yield* Effect.logWarning(
          `[DISPATCH] ${inFlight.running()} handler(s) still running after ${
            Duration.format(options.shutdownTimeout)
          }; interrupting`
        )
      }
    }
    yield* FiberSet.clear(options.chatFibers)
    // Everything this term still holds goes back, including rows a claim
    // returned while it was being stopped (they are in no list in memory).
    const released = yield* options.inbox.release(options.term, inFlight.startedIds()).pipe(
      Effect.timeout("5 seconds"),
      Effect.option
    )
    yield* Option.match(released, {
      onNone: () =>
        Effect.logWarning("[DISPATCH] could not hand unfinished updates back; the next leader's reconciler will"),
      onSome: (count) =>
        count === 0 ? Effect.void : Effect.logInfo(`[DISPATCH] handed ${count} unfinished update(s) back to pending`)
    })
  })

/** Leadership lost: stop every fiber of the term at once, write nothing. */
export const stopAtOnce = (options: DrainOptions): Effect.Effect<void> =>
  Effect.gen(function*() {
    options.inFlight.startDraining()
    yield* FiberSet.clear(options.background)
    yield* FiberSet.clear(options.chatFibers)
  })
