/**
 * The createTask budget shared by the whole process: at most `count` createTask
 * requests in any sliding window of `window` (KIE_CREATE_RATE, default 20/10s,
 * which is Kie's account limit). Callers wait their turn, first come first
 * served, instead of failing; Kie does not queue over-limit requests, it
 * rejects them with 429.
 *
 * Why a slot frees `window + margin` after its request *completed* (not after
 * it started): Kie counts a request when it arrives, at some instant between
 * our start and our completion that latency and jitter make unknowable. The
 * completion is the latest such instant, so a request started at least
 * `window` after an earlier one completed arrived more than `window` after it,
 * whatever the latency: with `count` slots no sliding window on Kie's side
 * can see more than `count` of our requests. The small margin only absorbs
 * timer and clock granularity (a timer may fire a millisecond early relative
 * to another clock, and either side may round): 0.5 % of the window, at least
 * 5 ms and at most 50 ms. The cost is the request latency plus the margin per
 * window: measured against the fake on loopback, 99.4 % of 20/10s with no
 * 429.
 *
 * A slot is held while its request is in flight, so a hanging request cannot
 * free its slot early; the per-request timeout bounds that.
 */
import { Clock, Context, Deferred, Duration, Effect, Layer, Semaphore } from "effect"
import { AppConfig, type RateBudget } from "../platform/AppConfig.ts"

/** Added to the window after each completed request; see the module comment. */
export const defaultSafetyMargin = (window: Duration.Duration): Duration.Duration =>
  Duration.millis(Math.min(50, Math.max(5, Math.round(Duration.toMillis(window) * 0.005))))

/** The budget's state at one instant (for tests and diagnostics). */
export interface KieRateBudgetSnapshot {
  readonly count: number
  readonly windowMillis: number
  /** Slots taken in the current window, including requests in flight. */
  readonly used: number
  readonly inFlight: number
  /** Callers waiting for a slot. */
  readonly waiting: number
}

/** The process-wide createTask budget. */
export interface KieRateBudgetShape {
  /**
   * Runs `effect` (one createTask request) once a slot is free. Waiting is
   * interruptible; the slot stays taken for `window + margin` after `effect`
   * ends, however it ends.
   */
  readonly withPermit: <A, E, R>(effect: Effect.Effect<A, E, R>) => Effect.Effect<A, E, R>
  /**
   * Kie answered 429 anyway (another client on the same account, a lower
   * limit than configured): hold every slot for a full window from now, as
   * Kie's guidance says, so that nobody in this process tries before then.
   */
  readonly penalize: Effect.Effect<void>
  /** The state now: slots taken, in flight, callers waiting. */
  readonly snapshot: Effect.Effect<KieRateBudgetSnapshot>
  /**
   * Completes once a request started now would get a slot at once (a slot is
   * free and nobody is waiting for one). Takes nothing. Lets a caller that
   * picks *what* to send at the last moment (the fair generation queue) wait
   * for capacity first and choose afterwards.
   */
  readonly awaitFreeSlot: Effect.Effect<void>
  /**
   * createTask requests another process sent (an earlier leader, read from
   * the database when this one takes over), as epoch millis: each holds a
   * slot until `sentAt + window + margin + EARLIER_SEND_SLACK`. Without this a
   * new leader starts with an empty window while Kie's still counts its
   * predecessor's requests, and its first burst is answered 429. At most
   * `count` slots are held; beyond that the ones that free last are kept.
   * Returns how many of these sends hold a slot.
   */
  readonly recordEarlierSends: (sentAt: ReadonlyArray<number>) => Effect.Effect<number>
}

/**
 * How long after it was sent an earlier leader's request may have reached
 * Kie. Only its send time is stored; the completion time, which the module
 * comment's argument needs, is not. A request slower than this on its way
 * can still meet a 429, which is retried: nothing was created.
 */
export const EARLIER_SEND_SLACK = Duration.seconds(1)

interface Slot {
  /** Epoch millis at which the slot is free again; `Infinity` while in flight. */
  expiresAt: number
}

/** Builds a budget. One budget per process: build it once, in one layer. */
export const make = (options: {
  readonly count: number
  readonly window: Duration.Input
  readonly margin?: Duration.Input | undefined
}): Effect.Effect<KieRateBudgetShape> =>
  Effect.gen(function*() {
    const count = options.count
    const window = Duration.fromInputUnsafe(options.window)
    const windowMillis = Duration.toMillis(window)
    const marginMillis = Duration.toMillis(
      options.margin === undefined ? defaultSafetyMargin(window) : Duration.fromInputUnsafe(options.margin)
    )
    const holdMillis = windowMillis + marginMillis
    // One waiter at a time looks for a free slot; the semaphore queues the
    // others in arrival order (it never lets a newcomer overtake a waiter).
    const turnstile = yield* Semaphore.make(1)
    let slots: Array<Slot> = []
    let waiting = 0
    // Completed when a slot's expiry changes, so the waiter re-evaluates.
    let changed = Deferred.makeUnsafe<void>()
    const signalChange = () => {
      const previous = changed
      changed = Deferred.makeUnsafe<void>()
      Deferred.doneUnsafe(previous, Effect.void)
    }

    const prune = (now: number) => {
      slots = slots.filter((slot) => slot.expiresAt > now)
    }

    /** Waits until `hasRoom` holds: re-checked when the earliest slot frees and whenever a slot changes. */
    const waitUntil = (hasRoom: () => boolean): Effect.Effect<void> =>
      Effect.gen(function*() {
        while (true) {
          const now = yield* Clock.currentTimeMillis
          prune(now)
          if (hasRoom()) return
          const wake = changed
          let earliest = Infinity
          for (const slot of slots) earliest = Math.min(earliest, slot.expiresAt)
          yield* Number.isFinite(earliest)
            ? Effect.raceFirst(Effect.sleep(Duration.millis(Math.max(0, earliest - now))), Deferred.await(wake))
            : Deferred.await(wake)
        }
      })

    const waitForFreeSlot = waitUntil(() => slots.length < count)
    // A waiter holds no slot yet but takes the next free one.
    const awaitFreeSlot = waitUntil(() => slots.length + waiting < count)

    const release = (slot: Slot) =>
      Effect.flatMap(Clock.currentTimeMillis, (now) =>
        Effect.sync(() => {
          slot.expiresAt = now + holdMillis
          signalChange()
        }))

    const withPermit = <A, E, R>(effect: Effect.Effect<A, E, R>): Effect.Effect<A, E, R> =>
      Effect.uninterruptibleMask((restore) =>
        Effect.gen(function*() {
          const ticket: { slot: Slot | undefined } = { slot: undefined }
          waiting++
          yield* restore(turnstile.withPermit(Effect.andThen(
            waitForFreeSlot,
            Effect.sync(() => {
              const slot: Slot = { expiresAt: Infinity }
              slots.push(slot)
              ticket.slot = slot
            })
          ))).pipe(
            Effect.ensuring(Effect.sync(() => {
              waiting--
            })),
            // Interrupted after the slot was taken but before `effect` ran:
            // release it like a used one, which is never wrong.
            Effect.onInterrupt(() => ticket.slot === undefined ? Effect.void : release(ticket.slot))
          )
          const slot = ticket.slot!
          return yield* restore(effect).pipe(Effect.ensuring(release(slot)))
        })
      )

    const penalize = Effect.flatMap(Clock.currentTimeMillis, (now) =>
      Effect.sync(() => {
        const until = now + holdMillis
        prune(now)
        for (const slot of slots) slot.expiresAt = Math.max(slot.expiresAt, until)
        while (slots.length < count) slots.push({ expiresAt: until })
        signalChange()
      }))

    const snapshot = Effect.flatMap(Clock.currentTimeMillis, (now) =>
      Effect.sync((): KieRateBudgetSnapshot => {
        prune(now)
        return {
          count,
          windowMillis,
          used: slots.length,
          inFlight: slots.filter((slot) => slot.expiresAt === Infinity).length,
          waiting
        }
      }))

    const slackMillis = Duration.toMillis(EARLIER_SEND_SLACK)
    const recordEarlierSends = (sentAt: ReadonlyArray<number>) =>
      Effect.flatMap(Clock.currentTimeMillis, (now) =>
        Effect.sync(() => {
          prune(now)
          const earlier = sentAt.map((at): Slot => ({ expiresAt: at + holdMillis + slackMillis })).filter((slot) =>
            slot.expiresAt > now
          )
          // More than the budget holds (the process's own sends may be among
          // them, counted twice): keep the slots that free last, which is the
          // cautious choice. In-flight slots (Infinity) always stay.
          slots = [...slots, ...earlier].sort((a, b) => b.expiresAt - a.expiresAt).slice(0, count)
          signalChange()
          return earlier.filter((slot) => slots.includes(slot)).length
        }))

    return { withPermit, penalize, snapshot, awaitFreeSlot, recordEarlierSends }
  })

/** The `KieRateBudget` service. */
export class KieRateBudget extends Context.Service<KieRateBudget, KieRateBudgetShape>()("zimage-bot/KieRateBudget") {
  /** The process-wide budget from KIE_CREATE_RATE. */
  static readonly layer = Layer.effect(
    KieRateBudget,
    Effect.gen(function*() {
      const config = yield* AppConfig
      return yield* make(budgetOptions(config.kieCreateRate))
    })
  )

  /** A budget with explicit settings (tests, benchmarks). */
  static readonly layerWith = (options: Parameters<typeof make>[0]) => Layer.effect(KieRateBudget, make(options))
}

const budgetOptions = (rate: RateBudget) => ({ count: rate.count, window: rate.window })
