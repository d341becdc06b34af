/**
 * Stopping the dispatcher when its leadership term ends.
 *
 * Details: a graceful release (`drain`) stops claiming, lets running handlers
 * finish within SHUTDOWN_TIMEOUT_MS, interrupts the rest and hands every row
 * this term still holds back to `pending`. A lost leadership (`stopAtOnce`)
 * stops every handler and claim at once, but lets the finishes already asked
 * for commit (within `finishSettleTimeout`): their handlers have replied, and
 * a row handed back instead would be answered a second time by the next
 * leader. A finish is guarded by `claimed_by`, so one that commits late
 * writes nothing on a row another term took. Once the term's finishes have
 * stopped, `handBackAfterLoss` hands its rows back and NOTIFYs, so the next
 * leader runs them at once instead of waiting out `DEPOSED_TERM_GRACE`
 * (`inbox/Reconciler.ts`). Until then the claim rule keeps those chats'
 * later updates waiting, so order holds.
 *
 * Gotchas: a release covers rows a claim returned while it was being stopped
 * (they are in no list in memory). A release that fails or does not answer
 * within `handBackTimeout` is left to the next leader's reconciler: a
 * process that is killed, frozen or cut off from the database never gets
 * here, and that is what the reconciler's rules are for. Handing back only
 * after the finishes stopped matters: a finish still in flight would find
 * its row handed back, and the update would be answered twice.
 */
import { Duration, Effect, FiberSet, Option } from "effect"
import type { InboxShape } from "../inbox/Inbox.ts"
import type { Finishing } from "./Finishing.ts"
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
  /** The term's finishes: a lost leadership lets those already asked for commit. */
  readonly finishing: Finishing
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
    yield* handBack(options, Duration.seconds(5))
  })

/**
 * How long a deposed term lets the finishes it already asked for commit.
 * Short, as `handBackTimeout`: both fit in the bound `StepDown` puts on
 * stopping.
 */
export const finishSettleTimeout = Duration.seconds(1)

/**
 * Leadership lost: stop every fiber of the term at once, then let the
 * finishes already asked for commit, within `finishSettleTimeout`
 * (`handBackAfterLoss` follows).
 */
export const stopAtOnce = (options: DrainOptions): Effect.Effect<void> =>
  Effect.gen(function*() {
    options.inFlight.startDraining()
    yield* FiberSet.clear(options.background)
    yield* FiberSet.clear(options.chatFibers)
    if (!(yield* options.finishing.settle(finishSettleTimeout))) {
      yield* Effect.logWarning(
        `[DISPATCH] finishes of handled updates did not commit within ${
          Duration.format(finishSettleTimeout)
        }; their updates go back to pending`
      )
    }
  })

/**
 * How long a deposed term tries to hand its rows back. Short: leadership was
 * lost because something is wrong with the database or the connection to it,
 * and stopping the term is bounded as a whole (`leadership/StepDown.ts`).
 */
export const handBackTimeout = Duration.seconds(2)

/** What handing back needs. */
export type HandBackOptions = Pick<DrainOptions, "inbox" | "term" | "inFlight">

/**
 * Leadership lost, this process alive: once nothing of the term runs and no
 * finish of it is in flight (the caller's ordering), hands the rows it still
 * holds back and NOTIFYs the dispatcher of whichever instance is ACTIVE now.
 */
export const handBackAfterLoss = (options: HandBackOptions): Effect.Effect<void> =>
  handBack(options, handBackTimeout).pipe(
    Effect.andThen((count) => (count > 0 ? Effect.ignore(options.inbox.wake) : Effect.void))
  )

/** Every row still `processing` under the term back to `pending`, within `timeout`; how many went back. */
const handBack = (options: HandBackOptions, timeout: Duration.Duration): Effect.Effect<number> =>
  options.inbox.release(options.term, options.inFlight.startedIds()).pipe(
    Effect.timeout(timeout),
    Effect.option,
    Effect.tap(Option.match({
      onNone: () =>
        Effect.logWarning("[DISPATCH] could not hand unfinished updates back; the next leader's reconciler will"),
      onSome: (count) =>
        count === 0 ? Effect.void : Effect.logInfo(`[DISPATCH] handed ${count} unfinished update(s) back to pending`)
    })),
    Effect.map(Option.getOrElse(() => 0))
  )
