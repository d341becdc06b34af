/**
 * Every way a Kie.ai call can fail, one tagged error each, and each error's
 * policy.
 *
 * Each error carries:
 * - `message`: for operators and logs, in English; never the API key, never a
 *   header, only Kie's own short `msg` and what we did;
 * - `retryable`: whether trying the same request again may succeed *and* is
 *   safe (a createTask that may have created a task is never retryable);
 * - `reasonForUser`: why it failed, for a user, as a `KieReason` that the
 *   messages module (`texts/Messages.ts`) words; `userReason` is that text in
 *   Russian and English.
 *
 * Details: every error class is made by `kieError`, which adds the policy
 * (`retryable`, `reasonForUser`) to a `Schema.TaggedError` and registers its
 * tag for `isKieError`. The policy lives on the prototype, so it is never
 * part of an error's fields (its JSON, its log line).
 */
import type * as Cause from "effect/Cause"
import { Schema } from "effect"
import { type KieReason, kieReasonText } from "../texts/Messages.ts"

/** A user-facing reason in both languages. */
export interface UserReason {
  readonly ru: string
  readonly en: string
}

/** Which request failed; part of every message so operators can tell them apart. */
export const KieOperation = Schema.Literals(["createTask", "recordInfo"])
/** `"createTask"` or `"recordInfo"`. */
export type KieOperation = typeof KieOperation.Type

/** What every Kie error says about itself besides its fields. */
export interface KiePolicy {
  /** Trying the same request again may succeed, and is safe (nothing can be billed twice). */
  readonly retryable: boolean
  /** Why it failed, for a user; worded by `kieReasonText`. */
  readonly reasonForUser: KieReason
  /** `reasonForUser` worded in both languages. */
  readonly userReason: UserReason
}

/** An error's policy: whether it is retried, and its reason (fixed, or read from the error). */
interface PolicyOf<Self> {
  readonly retryable: boolean
  readonly reasonForUser: KieReason | ((self: Self) => KieReason)
}

const kieErrorTags = new Set<string>()

/**
 * A `Schema.TaggedError` class with `policy`'s getters (`retryable`,
 * `reasonForUser`, `userReason`), whose tag `isKieError` knows. Used like
 * `class X extends kieError<X>()("X", fields, policy) {}`.
 */
const kieError =
  <Self>() =>
  <Tag extends string, const Fields extends Schema.Struct.Fields>(
    tag: Tag,
    fields: Fields,
    policy: PolicyOf<Self>
  ): Schema.Class<Self, Schema.TaggedStruct<Tag, Fields>, Cause.YieldableError & KiePolicy> => {
    kieErrorTags.add(tag)
    const Base = Schema.TaggedError<Self>()(tag, fields) as unknown as new(...args: Array<never>) => object
    const { reasonForUser, retryable } = policy
    class WithPolicy extends Base {
      get retryable(): boolean {
        return retryable
      }
      get reasonForUser(): KieReason {
        return typeof reasonForUser === "function" ? reasonForUser(this as unknown as Self) : reasonForUser
      }
      get userReason(): UserReason {
        return { ru: kieReasonText(this.reasonForUser, "ru"), en: kieReasonText(this.reasonForUser, "en") }
      }
    }
    return WithPolicy as unknown as Schema.Class<
      Self,
      Schema.TaggedStruct<Tag, Fields>,
      Cause.YieldableError & KiePolicy
    >
  }

/** The fields of an error about one request. */
const request = { operation: KieOperation, message: Schema.String }

/** Kie's code 401: the key is missing, wrong or revoked. An operator must act. */
export class KieUnauthorized extends kieError<KieUnauthorized>()("KieUnauthorized", request, {
  retryable: false,
  reasonForUser: "unavailable"
}) {}

/**
 * Kie's code 402: the account has no credits left. Stops every generation
 * until an operator tops up; users are told the service is unavailable, which
 * is true and is all they can act on.
 */
export class KieInsufficientCredits extends kieError<KieInsufficientCredits>()("KieInsufficientCredits", request, {
  retryable: false,
  reasonForUser: "unavailable"
}) {}

/** Kie's code 404: the endpoint, or for recordInfo the task, does not exist. */
export class KieNotFound extends kieError<KieNotFound>()("KieNotFound", request, {
  retryable: false,
  reasonForUser: "notFound"
}) {}

/** Kie's code 422 (other than the transient `recordInfo is null`), or our own check of the same rules. */
export class KieValidationFailed extends kieError<KieValidationFailed>()("KieValidationFailed", request, {
  retryable: false,
  reasonForUser: "rejected"
}) {}

/** Kie's code 429: over the account rate limit. Nothing was created. */
export class KieRateLimited extends kieError<KieRateLimited>()("KieRateLimited", request, {
  retryable: true,
  reasonForUser: "busy"
}) {}

/** Kie's code 433: the key's own usage cap (hourly/daily/total) is reached. Not retried. */
export class KieUsageLimitExceeded extends kieError<KieUsageLimitExceeded>()("KieUsageLimitExceeded", request, {
  retryable: false,
  reasonForUser: "usageCap"
}) {}

/** Kie's code 455: maintenance. Nothing was created. */
export class KieMaintenance extends kieError<KieMaintenance>()("KieMaintenance", request, {
  retryable: true,
  reasonForUser: "maintenance"
}) {}

/** Kie's code 500, or another 5xx answer (except 501/505 which mean something else). */
export class KieServerError extends kieError<KieServerError>()(
  "KieServerError",
  { operation: KieOperation, code: Schema.Number, message: Schema.String },
  { retryable: true, reasonForUser: "busy" }
) {}

/** Kie's code 501: generation failed at the request level. */
export class KieGenerationFailed extends kieError<KieGenerationFailed>()("KieGenerationFailed", request, {
  retryable: false,
  reasonForUser: "generationFailed"
}) {}

/** Kie's code 505: the feature (model) is disabled. */
export class KieFeatureDisabled extends kieError<KieFeatureDisabled>()("KieFeatureDisabled", request, {
  retryable: false,
  reasonForUser: "unavailable"
}) {}

/**
 * A code or HTTP status the documentation does not list (400, 403 from
 * Cloudflare, 408...). Not retried: we do not know what it means.
 */
export class KieUnexpectedResponse extends kieError<KieUnexpectedResponse>()(
  "KieUnexpectedResponse",
  {
    operation: KieOperation,
    httpStatus: Schema.Number,
    code: Schema.optional(Schema.Number),
    message: Schema.String
  },
  { retryable: false, reasonForUser: "unavailable" }
) {}

/** recordInfo did not answer within KIE_REQUEST_TIMEOUT_MS. */
export class KieRequestTimeout extends kieError<KieRequestTimeout>()(
  "KieRequestTimeout",
  { operation: KieOperation, timeoutMillis: Schema.Number, message: Schema.String },
  { retryable: true, reasonForUser: "busy" }
) {}

/**
 * No connection could be made (refused, DNS, unreachable, connect timeout,
 * TLS handshake): the request never left, so retrying is safe even for
 * createTask.
 */
export class KieConnectionFailed extends kieError<KieConnectionFailed>()("KieConnectionFailed", request, {
  retryable: true,
  reasonForUser: "busy"
}) {}

/** The connection broke after the request may have been sent (recordInfo only; createTask gets KieCreateTaskUncertain). */
export class KieTransportError extends kieError<KieTransportError>()("KieTransportError", request, {
  retryable: true,
  reasonForUser: "busy"
}) {}

/** An answer we could not read: not JSON, or not the documented shape. */
export class KieBadPayload extends kieError<KieBadPayload>()("KieBadPayload", request, {
  retryable: true,
  reasonForUser: "badAnswer"
}) {}

/**
 * createTask may have reached Kie (a timeout or a broken connection after the
 * request was sent, a gateway timeout, or an unreadable success answer), so a
 * task may exist and be billed. Never retried automatically: a retry could
 * bill a second task.
 *
 * `ref` identifies the attempt: in webhook mode it is in the callBackUrl, so
 * if Kie did create the task its callback is matched by `ref` and
 * `Kie.recoverTask(ref)` yields the task id; `recoverable` says whether that
 * can happen at all.
 */
export class KieCreateTaskUncertain extends kieError<KieCreateTaskUncertain>()(
  "KieCreateTaskUncertain",
  {
    reason: Schema.Literals(["timeout", "connection-lost", "gateway-timeout", "unreadable-answer"]),
    ref: Schema.String,
    recoverable: Schema.Boolean,
    message: Schema.String
  },
  { retryable: false, reasonForUser: "unconfirmed" }
) {}

/**
 * The task ended in state `fail`: Kie could not generate the image (content
 * filter, model error). Kie's failMsg is shown to the user when it is fit to
 * show (`safeFailMessage`).
 */
export class KieTaskFailed extends kieError<KieTaskFailed>()(
  "KieTaskFailed",
  { taskId: Schema.String, failCode: Schema.String, failMsg: Schema.String, message: Schema.String },
  {
    retryable: false,
    reasonForUser: (self) => {
      if (NSFW.test(self.failMsg)) return "nsfw"
      if (IMAGE_UNAVAILABLE.test(self.failMsg)) return "imageUnavailable"
      const detail = safeFailMessage(self.failMsg)
      return detail === undefined ? "generationFailed" : { failedWith: detail }
    }
  }
) {}

/** A failMsg saying the content filter refused the task. */
const NSFW = /nsfw|sensitive content|inappropriate|moderation/i
/** A failMsg saying an input picture could not be fetched (an expired upload or result URL). */
const IMAGE_UNAVAILABLE =
  /(image|file|url|picture).{0,40}(expired|not (found|accessible|available)|unable|fail(ed)? to (download|fetch|load))|(download|fetch)(ing)? .{0,20}(image|file).{0,20}fail/i

/** Any error of a Kie call. */
export type KieError =
  | KieUnauthorized
  | KieInsufficientCredits
  | KieNotFound
  | KieValidationFailed
  | KieRateLimited
  | KieUsageLimitExceeded
  | KieMaintenance
  | KieServerError
  | KieGenerationFailed
  | KieFeatureDisabled
  | KieUnexpectedResponse
  | KieRequestTimeout
  | KieConnectionFailed
  | KieTransportError
  | KieBadPayload
  | KieCreateTaskUncertain
  | KieTaskFailed

/** Errors of one createTask call. */
export type KieCreateTaskError = Exclude<
  KieError,
  KieRequestTimeout | KieTransportError | KieBadPayload | KieTaskFailed
>

/** Errors of one recordInfo call (`Kie.getTaskOnce`). */
export type KieGetTaskError = Exclude<KieError, KieCreateTaskUncertain | KieTaskFailed>

/** Whether `u` is one of the errors above (a caller's own errors may travel beside them). */
export const isKieError = (u: unknown): u is KieError =>
  typeof u === "object" && u !== null && kieErrorTags.has((u as { _tag?: unknown })._tag as string)

/**
 * Kie's failMsg, if it is fit to show a user: short plain text, no links or
 * markup, no stack traces. Anything else is replaced by a generic reason.
 */
export const safeFailMessage = (failMsg: string): string | undefined => {
  const text = failMsg.replace(/\s+/g, " ").trim()
  if (text.length < 3 || text.length > 200) return undefined
  if (/https?:|www\.|[<>{}[\]`\\]|\bat\s+\S+\s*\(|Exception|Traceback|\berror code\b/i.test(text)) return undefined
  if (!/^[\p{L}\p{N}\p{Zs}.,:;!?'"()%/+-]+$/u.test(text)) return undefined
  return text
}
