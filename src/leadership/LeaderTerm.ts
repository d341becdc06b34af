/**
 * One term of leadership: a fresh id each time this instance becomes ACTIVE.
 *
 * The dispatcher stamps the inbox rows it claims with it (`claimed_by`), so
 * rows left `processing` by an earlier term (a dead or deposed leader) are
 * told apart from this term's own in-flight work.
 */
import { Context, Effect, Layer } from "effect"
import { randomUUID } from "node:crypto"
import { AppConfig } from "../platform/AppConfig.ts"

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
