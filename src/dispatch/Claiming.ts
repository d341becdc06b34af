/**
 * Claiming: taking pending updates out of the inbox for this term, in
 * `update_id` order, and handing them to routing.
 *
 * Details: a claim takes at most `CLAIM_BATCH_SIZE` rows and never more than
 * the room left (`WORKERS × IN_FLIGHT_PER_WORKER` updates in memory); it goes
 * on while full batches keep coming. A claimed row that does not decode is
 * `dead` at once; a kind the chat flow does not handle is `done` at once.
 * The claim loop waits for a wake-up (a NOTIFY, a claim right after LISTEN
 * is confirmed, room opening again) or the sweep every
 * `DISPATCH_SWEEP_INTERVAL`, a backstop for missed notifications.
 *
 * Gotchas: a failed claim is logged once per problem and tried again on the
 * next wake-up. A claim writes nothing but the claim: an update's chat is
 * marked unblocked when the update is finished (`Finishing.ts`), and its
 * handler's replies to that chat skip the blocked-chat check meanwhile.
 */
import { Clock, DateTime, Duration, Effect, Exit, Metric, Option, Queue, Schedule, Schema } from "effect"
import type { SqlError } from "effect/sql/SqlError"
import type { ClaimedUpdate, InboxShape } from "../inbox/Inbox.ts"
import * as Metrics from "../observability/Metrics.ts"
import type { RateBudget } from "../platform/AppConfig.ts"
import { repeatLogged } from "../platform/Supervised.ts"
import { isHandledKind, Update } from "../telegram/TelegramUpdate.ts"
import { type FloodVerdict, makeFloodWatch } from "./FloodWatch.ts"
import { countFinished, describeFailure, record } from "./Bookkeeping.ts"
import { workerFor } from "./ChatRouting.ts"
import type { InFlight, Item } from "./InFlight.ts"

/** Backstop claim when no notification arrived for this long. */
export const DISPATCH_SWEEP_INTERVAL = Duration.seconds(5)
/** Rows per claim query. */
export const CLAIM_BATCH_SIZE = 64
/** Claimed, unfinished updates held in memory per worker. */
export const IN_FLIGHT_PER_WORKER = 16

const decodeUpdate = Schema.decodeUnknownExit(Update)
const unansweredInFlood = Metrics.seriesOf(Metrics.updatesDropped, { reason: "flood_unanswered" })

/** What claiming needs. */
export interface ClaimingOptions {
  readonly inbox: InboxShape
  /** This leadership term: the claim's owner. */
  readonly term: string
  readonly inFlight: InFlight
  readonly workers: number
  /** Updates of one user in a chat answered one by one within a window (`FloodWatch.ts`). */
  readonly floodNoticeRate: RateBudget
  /** Hands a claimed update to its chat. */
  readonly route: (item: Item) => Effect.Effect<void>
}

/** Claiming for one term. */
export interface Claiming {
  /** Claims while there is room and rows keep coming; returns how many rows were claimed. */
  readonly claimAvailable: Effect.Effect<number, SqlError>
  /** How many more updates there is room for in memory. */
  readonly room: () => number
  /**
   * Takes rows already claimed for this term (by the INSERT that stored them,
   * `Inbox.claimHereOnStore`) as a claim takes its own: decoded, flood
   * checked, routed to their chats.
   */
  readonly takeClaimed: (claimed: ReadonlyArray<ClaimedUpdate>) => Effect.Effect<void>
  /**
   * Forever: waits for a wake-up on `wake` (or the sweep interval), then
   * claims. Logs a failing claim once and its recovery once.
   */
  readonly claimLoop: (wake: Queue.Queue<void>) => Effect.Effect<never>
}

/** Makes claiming for one term. */
export const makeClaiming = (options: ClaimingOptions): Claiming => {
  const { inbox, inFlight, term } = options
  const capacity = options.workers * IN_FLIGHT_PER_WORKER
  const floodWatch = makeFloodWatch(options.floodNoticeRate)

  /** The flood verdict for a claimed update from a user in a chat (others are always answered). */
  const floodVerdict = (row: ClaimedUpdate, update: Update, claimedAtMillis: number): FloodVerdict => {
    const userId = update.message?.from?.id ?? update.callback_query?.from.id
    if (row.chatId === null || userId === undefined) return "answer"
    const receivedAt = Option.match(row.receivedAt, {
      onNone: () => claimedAtMillis,
      onSome: (at) => DateTime.toEpochMillis(at)
    })
    return floodWatch.verdict(`${row.chatId}:${userId}`, receivedAt)
  }

  /** Splits a claimed batch: routable items, rows of unhandled kinds (done); undecodable rows are dead here. */
  const sortOut = (claimed: ReadonlyArray<ClaimedUpdate>, claimedAtMillis: number) =>
    Effect.gen(function*() {
      const unhandled: Array<number> = []
      const routed: Array<Item> = []
      for (const row of claimed) {
        const decoded = decodeUpdate(row.payload)
        if (Exit.isFailure(decoded)) {
          const message = `undecodable update: ${describeFailure(decoded.cause).slice(0, 500)}`
          yield* countFinished(
            "dead",
            yield* record(`update ${row.updateId} as dead`, inbox.markDead(term, row.updateId, message))
          )
          yield* Effect.logError(`[DISPATCH] update ${row.updateId} dead: ${message}`)
          continue
        }
        if (!isHandledKind(decoded.value)) {
          unhandled.push(row.updateId)
          continue
        }
        const chatKey = row.chatId === null ? `update:${row.updateId}` : String(row.chatId)
        const flood = floodVerdict(row, decoded.value, claimedAtMillis)
        if (flood !== "answer") yield* Metric.update(unansweredInFlood, 1)
        routed.push({
          flood,
          claimed: row,
          update: decoded.value,
          chatKey,
          worker: workerFor(chatKey, options.workers),
          state: "queued",
          started: false,
          claimedAtMillis
        })
      }
      return { unhandled, routed }
    })

  /** Routes claimed rows to their chats (unhandled kinds are done, undecodable ones dead, here). */
  const takeClaimed = (claimed: ReadonlyArray<ClaimedUpdate>) =>
    Effect.gen(function*() {
      const claimedAtMillis = yield* Clock.currentTimeMillis
      const { routed, unhandled } = yield* sortOut(claimed, claimedAtMillis)
      if (unhandled.length > 0) {
        yield* countFinished(
          "done",
          yield* record(`${unhandled.length} update(s) of unhandled kinds as done`, inbox.complete(term, unhandled))
        )
        yield* Effect.logDebug(`[DISPATCH] ${unhandled.length} update(s) of kinds the bot does not handle marked done`)
      }
      for (const item of routed) yield* options.route(item)
    })

  const room = () => capacity - inFlight.size()

  const claimAvailable = Effect.gen(function*() {
    let total = 0
    for (;;) {
      const limit = Math.min(CLAIM_BATCH_SIZE, room())
      if (limit <= 0) {
        inFlight.markSaturated()
        return total
      }
      const claimed = yield* inbox.claim(term, limit)
      total += claimed.length
      yield* takeClaimed(claimed)
      if (claimed.length < limit) return total
    }
  }).pipe(Effect.withSpan("Dispatcher.claimAvailable"))

  /**
   * One wake-up and its claim. The first wake-up comes from the listener
   * once LISTEN is confirmed (so nothing stored in between is missed), or
   * from the sweep timer if LISTEN cannot be established.
   */
  const wakeAndClaim = (wake: Queue.Queue<void>) =>
    Effect.gen(function*() {
      yield* Effect.logDebug("[DISPATCH] waiting for work")
      const woken = yield* Queue.take(wake).pipe(Effect.timeoutOption(DISPATCH_SWEEP_INTERVAL))
      const claimed = yield* claimAvailable
      if (Option.isNone(woken) && claimed > 0) {
        // Only a missed notification (e.g. across a reconnect) leaves work for the sweep.
        yield* Effect.logInfo(`[DISPATCH] sweep found ${claimed} update(s) no notification announced`)
      }
    })

  const claimLoop = (wake: Queue.Queue<void>) =>
    repeatLogged(wakeAndClaim(wake), Schedule.forever, {
      failing: (error) => `[DISPATCH] claim failed, retrying on the next wake-up: ${error.message}`,
      recovered: "[DISPATCH] claiming works again"
    })

  return { claimAvailable, room, takeClaimed, claimLoop }
}
