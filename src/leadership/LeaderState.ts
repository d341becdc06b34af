/**
 * What the rest of the service sees of leader election: whether this
 * instance is ACTIVE, and where its controller is (`LeaderStatus`).
 *
 * `LeaderLock.layer` provides it; leader-only services may use it (e.g. to
 * check `isActive` before a side effect), and /health, metrics and tests
 * read it.
 */
import { Context, type DateTime, type Effect, type Option, type SubscriptionRef } from "effect"

/**
 * Where the controller is. Phases marked (waiting) are the ones in which it
 * sleeps on the clock or waits for an outside event; in the others a database
 * round trip or a leader-only startup is in flight.
 */
export type LeaderPhase =
  | "waiting_for_database" // (waiting) Database.ready has not completed yet
  | "connecting" // opening the lock session
  | "trying" // pg_try_advisory_lock in flight, or a lock wait being cancelled
  | "passive" // (waiting) another instance holds the lock; blocked in pg_advisory_lock until it is free
  | "starting" // lock held, leader-only services being built
  | "active" // (waiting) lock held, leader-only services running
  | "checking" // lock held, heartbeat in flight
  | "stepping_down" // releasing: draining leader-only services, unlocking
  | "backoff" // (waiting) after a failure, before the next attempt
  | "stopped" // the layer was released

/** The (waiting) phases of `LeaderPhase`: no round trip of the controller is in flight. */
export const waitingPhases: ReadonlySet<LeaderPhase> = new Set<LeaderPhase>([
  "waiting_for_database",
  "passive",
  "active",
  "backoff",
  "stopped"
])

/** The controller's status, published on every change. */
export interface LeaderStatus {
  readonly phase: LeaderPhase
  /** When this instance last became ACTIVE; `None` while PASSIVE. */
  readonly activeSince: Option.Option<DateTime.Utc>
  /**
   * A heartbeat statement is in flight. While ACTIVE this is also visible as
   * the "checking" phase; while stepping down the phase stays
   * "stepping_down", so this is how a caller sees that the lock session is
   * mid round trip.
   */
  readonly heartbeatInFlight: boolean
}

/** This instance's role in leader election, as the rest of the service sees it. */
export class LeaderState extends Context.Service<LeaderState, {
  /** true while this instance holds the lock and its leader-only services run */
  readonly active: SubscriptionRef.SubscriptionRef<boolean> // read-only for others by convention
  readonly isActive: Effect.Effect<boolean>
  /** Finer-grained than `active`, for /health, operators and tests. Read-only by convention. */
  readonly status: SubscriptionRef.SubscriptionRef<LeaderStatus>
  /** The advisory lock key in use (not a secret). */
  readonly lockKey: bigint
}>()("zimage-bot/LeaderState") {}
