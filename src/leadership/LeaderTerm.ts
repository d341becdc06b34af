/**
 * One term of leadership: a fresh id each time this instance becomes ACTIVE.
 *
 * The dispatcher stamps the inbox rows it claims with it (`claimed_by`), so
 * rows left `processing` by an earlier term (a dead or deposed leader) are
 * told apart from this term's own in-flight work.
 *
 * The instance id is everything before the id's last "/": it is also in the
 * `application_name` of every connection the instance opens
 * (`instanceApplicationPrefixes`), which is how a new leader tells a dead
 * leader's rows (no connection of its instance left) from a live one's.
 */
import { Context, Effect, Layer } from "effect"
import { randomUUID } from "node:crypto"
import { AppConfig } from "../platform/AppConfig.ts"

/**
 * How an instance names its connections: `<prefix><instance id>`, cut to 63
 * characters (PostgreSQL's limit): its pool (`database/Database.ts`) and its
 * lock session (`LockSession.ts`).
 */
export const instanceApplicationPrefixes = { pool: "zimage-bot ", lockSession: "zimage-bot leader " } as const

/** The `application_name` of a connection of `instanceId` opened with `prefix`. */
export const instanceApplicationName = (prefix: string, instanceId: string) => `${prefix}${instanceId}`.slice(0, 63)

/** The current term of this instance's leadership; built anew for every term. */
export class LeaderTerm extends Context.Service<LeaderTerm, {
  /** `<instance id>/<random>`, unique per term. */
  readonly id: string
}>()("zimage-bot/LeaderTerm") {
  /** Build it inside the leadership scope so every term gets a new id. */
  static readonly layer = Layer.effect(
    LeaderTerm,
    Effect.gen(function*() {
      const config = yield* AppConfig
      return LeaderTerm.of({ id: `${config.instanceId}/${randomUUID().slice(0, 8)}` })
    })
  )
}
