/**
 * The controller's status board: the `active` flag and `LeaderStatus` that
 * `LeaderState` publishes, the flips between PASSIVE and ACTIVE with their
 * log lines and metrics, and the leader fields of /health.
 *
 * When to use: the controller's parts write every change of phase and every
 * flip here and nowhere else, so what /health, metrics and the log say stays
 * in step with `LeaderState`.
 *
 * Details: the flip lines are the operator-facing markers listed in
 * `docs/contract.md`; their text never changes:
 * - to ACTIVE: `[LOCK] ✅ ACTIVE MODE: ...`, `[LOCK_CONTROLLER] State
 *   transition: PASSIVE → ACTIVE`, `[STATE_SYNC] active_state: False -> True
 *   (reason=lock_acquired)`;
 * - to PASSIVE: `[LOCK_CONTROLLER] State transition: ACTIVE → PASSIVE`,
 *   `[STATE_SYNC] active_state: True -> False (reason=<StepDownReason>)`,
 *   info for a release, warning otherwise.
 */
import { type Context, DateTime, Effect, Metric, Option, SubscriptionRef } from "effect"
import type { HealthFields } from "../observability/Health.ts"
import * as Metrics from "../observability/Metrics.ts"
import { type LeaderPhase, LeaderState, type LeaderStatus } from "./LeaderState.ts"

/** Why a term of leadership ended; the `reason=` of the STATE_SYNC line. */
export type StepDownReason = "lock_lost" | "released" | "leader_services_failed"

/** `zimage_leader_transitions_total{kind}` of each way a term ends. */
const transitionKind: Record<StepDownReason, string> = {
  lock_lost: "lost",
  released: "released",
  leader_services_failed: "failed"
}

/** Keeps `zimage_leader_active` and `zimage_leader_transitions_total` in step with `active`. */
const recordTransition = (active: boolean, kind: string) =>
  Effect.andThen(
    Metric.update(Metrics.leaderActive, active ? 1 : 0),
    Metric.update(Metric.withAttributes(Metrics.leaderTransitions, { kind }), 1)
  )

/** Writes of the controller's parts; reads go through `state`. */
export interface StatusBoard {
  /** The published state (provided as `LeaderState`). */
  readonly state: Context.Service.Shape<typeof LeaderState>
  readonly setPhase: (phase: LeaderPhase) => Effect.Effect<void>
  /** Moves `from` → `to` only; leaves any other phase ("starting", "stepping_down") alone. */
  readonly switchPhase: (from: LeaderPhase, to: LeaderPhase) => Effect.Effect<void>
  /** Marks a heartbeat in flight (and, while "active", the phase "checking"), or done. */
  readonly setHeartbeatInFlight: (inFlight: boolean) => Effect.Effect<void>
  /** The lock was just taken on the session with backend `sessionPid`: logs the markers, flips ACTIVE. */
  readonly becomeActive: (sessionPid: number) => Effect.Effect<void>
  /**
   * Flips PASSIVE (phase "stepping_down" unless "stopped") and logs why.
   * Idempotent: a second call (loss noticed while draining) logs nothing.
   */
  readonly becomePassive: (reason: StepDownReason) => Effect.Effect<void>
  /** The leader fields of /health. */
  readonly health: Effect.Effect<HealthFields>
}

/** A board for the lock on `lockKey`, PASSIVE and "waiting_for_database". */
export const makeStatusBoard = (lockKey: bigint): Effect.Effect<StatusBoard> =>
  Effect.gen(function*() {
    const active = yield* SubscriptionRef.make(false)
    const status = yield* SubscriptionRef.make<LeaderStatus>({
      phase: "waiting_for_database",
      activeSince: Option.none(),
      heartbeatInFlight: false
    })
    const state = LeaderState.of({ active, isActive: SubscriptionRef.get(active), status, lockKey })

    const becomeActive = (sessionPid: number) =>
      Effect.gen(function*() {
        yield* Effect.logInfo("[LOCK] ✅ ACTIVE MODE: PostgreSQL advisory lock acquired").pipe(
          Effect.annotateLogs({ lock_session_pid: sessionPid })
        )
        yield* Effect.logInfo("[LOCK_CONTROLLER] State transition: PASSIVE → ACTIVE")
        const now = yield* DateTime.now
        yield* SubscriptionRef.set(status, {
          phase: "starting" as const,
          activeSince: Option.some(now),
          heartbeatInFlight: false
        })
        yield* SubscriptionRef.set(active, true)
        yield* recordTransition(true, "acquired")
        yield* Effect.logInfo("[STATE_SYNC] active_state: False -> True (reason=lock_acquired)")
      })

    const becomePassive = (reason: StepDownReason) =>
      Effect.gen(function*() {
        // Status first, so whoever sees `active` turn false also sees a busy phase.
        yield* SubscriptionRef.update(
          status,
          (s): LeaderStatus => s.phase === "stopped" ? s : { ...s, phase: "stepping_down", activeSince: Option.none() }
        )
        const was = yield* SubscriptionRef.getAndSet(active, false)
        if (!was) return
        yield* recordTransition(false, transitionKind[reason])
        const log = reason === "released" ? Effect.logInfo : Effect.logWarning
        yield* log("[LOCK_CONTROLLER] State transition: ACTIVE → PASSIVE")
        yield* log(`[STATE_SYNC] active_state: True -> False (reason=${reason})`)
      })

    const health = Effect.gen(function*() {
      const isActive = yield* SubscriptionRef.get(active)
      const current = yield* SubscriptionRef.get(status)
      return {
        active: isActive,
        role: isActive ? "active" : "passive",
        leader_phase: current.phase,
        leader_since: isActive ? Option.getOrNull(Option.map(current.activeSince, DateTime.formatIso)) : null,
        lock_key: lockKey.toString()
      }
    })

    return {
      state,
      setPhase: (phase) => SubscriptionRef.update(status, (s): LeaderStatus => ({ ...s, phase })),
      switchPhase: (from, to) =>
        SubscriptionRef.update(status, (s): LeaderStatus => s.phase === from ? { ...s, phase: to } : s),
      setHeartbeatInFlight: (inFlight) =>
        SubscriptionRef.update(status, (s): LeaderStatus => ({
          ...s,
          phase: inFlight && s.phase === "active" ? "checking" : s.phase,
          heartbeatInFlight: inFlight
        })),
      becomeActive,
      becomePassive,
      health
    }
  })
