/**
 * The sweep: deadlines, recovery, and anything a wake-up missed.
 *
 * When to use: `loop` runs for the term (every SWEEP_INTERVAL, sooner when
 * woken); `expire` wherever a row is found past its deadline (the submission
 * checks it before sending).
 *
 * Details: one pass, at most SWEEP_BATCH rows per kind:
 *
 * | rows                                      | the sweep                                        |
 * | ----------------------------------------- | ------------------------------------------------ |
 * | past `deadline_at` (`succeeded`: plus     | failed "took too long" (`expire`), unless this   |
 * | DELIVERY_GRACE, its picture exists)       | term is sending or delivering it                 |
 * | `queued`, during an account pause         | failed at once with the pause's reason           |
 * | `submitting`, not being sent by this term | `recover`: its task found by its ref, or failed  |
 * | `succeeded`                               | delivery started (unless it runs)                |
 * | `failed`, user not told                   | notice started (unless it runs)                  |
 * | finished, status message still open       | status message finalized                         |
 *
 * A `submitting` row nobody in this term is sending is resolved through the
 * task registry (`Kie.recoverTask(ref)`: the task id createTask returned, or
 * the one Kie's callback revealed for the ref). If that reveals nothing: in
 * webhook mode it waits for the callback until its deadline; in polling mode
 * (no callback can come) it fails at once with the retry button, once the
 * previous attempt has certainly ended (KIE_REQUEST_TIMEOUT_MS +
 * UNCERTAIN_SETTLE after it was marked).
 *
 * Gotchas: a row this term is sending, or delivering, is left to that fiber
 * even past its deadline: its outcome decides.
 */
import { DateTime, Duration, Effect, Option } from "effect"
import type { SqlError } from "effect/sql/SqlError"
import { t } from "../texts/Messages.ts"
import { type Generation, Generations } from "../generations/Generations.ts"
import { Kie } from "../kie/Kie.ts"
import { AppConfig } from "../platform/AppConfig.ts"
import { repeatLogged } from "../platform/Supervised.ts"
import type { AccountPause } from "./AccountPause.ts"
import { logState } from "./Bookkeeping.ts"
import type { Delivery } from "./Delivery.ts"
import type { EngineTerm } from "./EngineTerm.ts"
import type { FailureNotices } from "./FailureNotices.ts"
import type { StatusMessages } from "./StatusMessages.ts"

/** Deadlines, deliveries, notices and recovery are checked at least this often. */
export const SWEEP_INTERVAL = Duration.seconds(5)
/** Rows looked at per kind per sweep. */
export const SWEEP_BATCH = 200
/** A `succeeded` row (its picture exists and is paid for) gets this long past its deadline to be delivered. */
export const DELIVERY_GRACE = Duration.minutes(10)
/** After KIE_REQUEST_TIMEOUT_MS plus this, a `submitting` row nobody is sending has certainly been answered or lost. */
export const UNCERTAIN_SETTLE = Duration.seconds(10)

/** The sweep of one term. */
export interface Sweep {
  /** Fails `g` as past its deadline (while Kie is paused, a queued one gets the pause's reason). */
  readonly expire: (g: Generation) => Effect.Effect<void>
  /** One pass (see the module doc). */
  readonly pass: Effect.Effect<void, SqlError>
  /** `pass` every SWEEP_INTERVAL for the term, sooner when woken; a failure logged once. */
  readonly loop: Effect.Effect<never>
}

/** The sweep of a term. */
export const make = (
  term: EngineTerm,
  parts: {
    readonly pause: Pick<AccountPause, "active">
    readonly notices: Pick<FailureNotices, "fail" | "start">
    readonly delivery: Pick<Delivery, "start" | "running">
    readonly status: Pick<StatusMessages, "finalize">
  }
): Effect.Effect<Sweep, never, AppConfig | Generations | Kie> =>
  Effect.gen(function*() {
    const config = yield* AppConfig
    const generations = yield* Generations
    const kie = yield* Kie
    const { delivery, notices, pause, status } = parts
    const webhookMode = Option.isSome(config.publicUrl)

    const expire = (g: Generation) =>
      Effect.gen(function*() {
        const paused = yield* pause.active
        const reason = g.status === "queued" && Option.isSome(paused)
          ? paused.value.userReason[g.lang]
          : t(g.lang).timedOut
        yield* notices.fail(
          g,
          "timeout",
          `not finished within ${Duration.format(config.generationTimeout)} (was ${g.status})`,
          reason,
          "timeout"
        )
      })

    /** A `submitting` row nobody in this term is sending: find its task, or give up on it. */
    const recover = (g: Generation, now: DateTime.Utc) =>
      Effect.gen(function*() {
        const taskId = g.submitRef === null ? Option.none<string>() : yield* kie.recoverTask(g.submitRef)
        if (Option.isSome(taskId)) {
          const marked = yield* generations.markSubmitted(g.id, taskId.value, now)
          if (marked) {
            yield* logState(g.id, "submitting → submitted (task found by its ref)", taskId.value)
            yield* term.wake("poll")
          }
          return
        }
        const sentAt = Option.getOrElse(g.submittedAt, () => g.updatedAt)
        const settledAt = DateTime.addDuration(sentAt, Duration.sum(config.kieRequestTimeout, UNCERTAIN_SETTLE))
        if (webhookMode || DateTime.isLessThan(now, settledAt)) return
        yield* notices.fail(
          g,
          "KieCreateTaskUncertain",
          "createTask was sent but its answer never recorded (restart or failover); no callback can reveal the task in polling mode",
          t(g.lang).unconfirmed
        )
      })

    const pass = Effect.gen(function*() {
      const now = yield* DateTime.now
      for (const g of yield* generations.overdue(SWEEP_BATCH, DELIVERY_GRACE)) {
        if (term.submissions.get(g.id) === "sending" || delivery.running(g.id)) continue
        yield* expire(g)
      }
      const paused = yield* pause.active
      if (Option.isSome(paused) && paused.value.kind === "account") {
        for (const g of yield* generations.withStatus("queued", SWEEP_BATCH)) {
          if (term.submissions.has(g.id)) continue
          const { code, detail, userReason } = paused.value
          yield* notices.fail(g, code, `not submitted: ${detail}`, userReason[g.lang])
        }
      }
      for (const g of yield* generations.withStatus("submitting", SWEEP_BATCH)) {
        if (!term.submissions.has(g.id)) yield* recover(g, now)
      }
      for (const g of yield* generations.withStatus("succeeded", SWEEP_BATCH)) yield* delivery.start(g.id)
      for (const g of yield* generations.failedUnnotified(SWEEP_BATCH)) yield* notices.start(g.id)
      for (const g of yield* generations.openStatusMessages(SWEEP_BATCH)) {
        const messageId = g.statusMessageId
        if (messageId !== null) yield* term.startJob(`finalize:${g.id}`, status.finalize(g, messageId))
      }
    }).pipe(Effect.withSpan("Engine.sweep"))

    const loop = repeatLogged(pass, term.wokenOrAfter("sweep", () => SWEEP_INTERVAL), {
      failing: (error) => `[GEN] sweep failed, retrying: ${error.message}`,
      recovered: "[GEN] sweeps work again"
    })

    return { expire, pass, loop }
  })
