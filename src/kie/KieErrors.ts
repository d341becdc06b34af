/**
 * Every way a Kie.ai call can fail, one tagged error each.
 *
 * Each error carries:
 * - `message`: for operators and logs, in English; never the API key, never a
 *   header, only Kie's own short `msg` and what we did;
 * - `retryable`: whether trying the same request again may succeed *and* is
 *   safe (a createTask that may have created a task is never retryable);
 * - `userReason`: a short plain-language reason a user can be shown, in
 *   Russian and English (the chat texts around it belong to the messages
 *   module).
 */
import { Schema } from "effect"

export interface UserReason {
  readonly ru: string
  readonly en: string
}

export type Language = "ru" | "en"

/** Which request failed; part of every message so operators can tell them apart. */
export const KieOperation = Schema.Literals(["createTask", "recordInfo"])
export type KieOperation = typeof KieOperation.Type

const reasons = {
  unavailable: {
    en: "The image service is temporarily unavailable. Please try again later.",
    ru: "Сервис генерации временно недоступен. Попробуйте позже."
  },
  busy: {
    en: "The image service is busy or unreachable right now. Please try again in a minute.",
    ru: "Сервис генерации сейчас перегружен или недоступен. Попробуйте через минуту."
  },
  maintenance: {
    en: "The image service is under maintenance. Please try again later.",
    ru: "На сервисе генерации идут технические работы. Попробуйте позже."
  },
  usageCap: {
    en: "The generation limit of the service is used up for now. Please try again later.",
    ru: "Лимит генераций сервиса сейчас исчерпан. Попробуйте позже."
  },
  rejected: {
    en: "The request was rejected: the prompt was not accepted. Try rephrasing it.",
    ru: "Запрос отклонён: описание не принято. Попробуйте переформулировать его."
  },
  generationFailed: {
    en: "The image could not be generated. Please try again.",
    ru: "Не удалось сгенерировать картинку. Попробуйте ещё раз."
  },
  notFound: {
    en: "The image service lost this generation. Please try again.",
    ru: "Сервис генерации потерял эту задачу. Попробуйте ещё раз."
  },
  unconfirmed: {
    en: "The image service did not confirm the request. Please try again in a minute.",
    ru: "Сервис генерации не подтвердил запрос. Попробуйте через минуту."
  },
  timeout: {
    en: "The image took too long to generate. Please try again.",
    ru: "Генерация заняла слишком много времени. Попробуйте ещё раз."
  },
  badAnswer: {
    en: "The image service sent an unexpected answer. Please try again later.",
    ru: "Сервис генерации прислал неожиданный ответ. Попробуйте позже."
  }
} satisfies Record<string, UserReason>

/** Kie's code 401: the key is missing, wrong or revoked. An operator must act. */
export class KieUnauthorized extends Schema.TaggedError<KieUnauthorized>()("KieUnauthorized", {
  operation: KieOperation,
  message: Schema.String
}) {
  get retryable(): boolean {
    return false
  }
  get userReason(): UserReason {
    return reasons.unavailable
  }
}

/**
 * Kie's code 402: the account has no credits left. Stops every generation
 * until an operator tops up; users are told the service is unavailable, which
 * is true and is all they can act on.
 */
export class KieInsufficientCredits extends Schema.TaggedError<KieInsufficientCredits>()("KieInsufficientCredits", {
  operation: KieOperation,
  message: Schema.String
}) {
  get retryable(): boolean {
    return false
  }
  get userReason(): UserReason {
    return reasons.unavailable
  }
}

/** Kie's code 404: the endpoint, or for recordInfo the task, does not exist. */
export class KieNotFound extends Schema.TaggedError<KieNotFound>()("KieNotFound", {
  operation: KieOperation,
  message: Schema.String
}) {
  get retryable(): boolean {
    return false
  }
  get userReason(): UserReason {
    return reasons.notFound
  }
}

/** Kie's code 422 (other than the transient `recordInfo is null`), or our own check of the same rules. */
export class KieValidationFailed extends Schema.TaggedError<KieValidationFailed>()("KieValidationFailed", {
  operation: KieOperation,
  message: Schema.String
}) {
  get retryable(): boolean {
    return false
  }
  get userReason(): UserReason {
    return reasons.rejected
  }
}

/** Kie's code 429: over the account rate limit. Nothing was created. */
export class KieRateLimited extends Schema.TaggedError<KieRateLimited>()("KieRateLimited", {
  operation: KieOperation,
  message: Schema.String
}) {
  get retryable(): boolean {
    return true
  }
  get userReason(): UserReason {
    return reasons.busy
  }
}

/** Kie's code 433: the key's own usage cap (hourly/daily/total) is reached. Not retried. */
export class KieUsageLimitExceeded extends Schema.TaggedError<KieUsageLimitExceeded>()("KieUsageLimitExceeded", {
  operation: KieOperation,
  message: Schema.String
}) {
  get retryable(): boolean {
    return false
  }
  get userReason(): UserReason {
    return reasons.usageCap
  }
}

/** Kie's code 455: maintenance. Nothing was created. */
export class KieMaintenance extends Schema.TaggedError<KieMaintenance>()("KieMaintenance", {
  operation: KieOperation,
  message: Schema.String
}) {
  get retryable(): boolean {
    return true
  }
  get userReason(): UserReason {
    return reasons.maintenance
  }
}

/** Kie's code 500, or another 5xx answer (except 501/505 which mean something else). */
export class KieServerError extends Schema.TaggedError<KieServerError>()("KieServerError", {
  operation: KieOperation,
  code: Schema.Number,
  message: Schema.String
}) {
  get retryable(): boolean {
    return true
  }
  get userReason(): UserReason {
    return reasons.busy
  }
}

/** Kie's code 501: generation failed at the request level. */
export class KieGenerationFailed extends Schema.TaggedError<KieGenerationFailed>()("KieGenerationFailed", {
  operation: KieOperation,
  message: Schema.String
}) {
  get retryable(): boolean {
    return false
  }
  get userReason(): UserReason {
    return reasons.generationFailed
  }
}

/** Kie's code 505: the feature (model) is disabled. */
export class KieFeatureDisabled extends Schema.TaggedError<KieFeatureDisabled>()("KieFeatureDisabled", {
  operation: KieOperation,
  message: Schema.String
}) {
  get retryable(): boolean {
    return false
  }
  get userReason(): UserReason {
    return reasons.unavailable
  }
}

/**
 * A code or HTTP status the documentation does not list (400, 403 from
 * Cloudflare, 408...). Not retried: we do not know what it means.
 */
export class KieUnexpectedResponse extends Schema.TaggedError<KieUnexpectedResponse>()("KieUnexpectedResponse", {
  operation: KieOperation,
  httpStatus: Schema.Number,
  code: Schema.optional(Schema.Number),
  message: Schema.String
}) {
  get retryable(): boolean {
    return false
  }
  get userReason(): UserReason {
    return reasons.unavailable
  }
}

/** recordInfo did not answer within KIE_REQUEST_TIMEOUT_MS. */
export class KieRequestTimeout extends Schema.TaggedError<KieRequestTimeout>()("KieRequestTimeout", {
  operation: KieOperation,
  timeoutMillis: Schema.Number,
  message: Schema.String
}) {
  get retryable(): boolean {
    return true
  }
  get userReason(): UserReason {
    return reasons.busy
  }
}

/**
 * No connection could be made (refused, DNS, unreachable, connect timeout,
 * TLS handshake): the request never left, so retrying is safe even for
 * createTask.
 */
export class KieConnectionFailed extends Schema.TaggedError<KieConnectionFailed>()("KieConnectionFailed", {
  operation: KieOperation,
  message: Schema.String
}) {
  get retryable(): boolean {
    return true
  }
  get userReason(): UserReason {
    return reasons.busy
  }
}

/** The connection broke after the request may have been sent (recordInfo only; createTask gets KieCreateTaskUncertain). */
export class KieTransportError extends Schema.TaggedError<KieTransportError>()("KieTransportError", {
  operation: KieOperation,
  message: Schema.String
}) {
  get retryable(): boolean {
    return true
  }
  get userReason(): UserReason {
    return reasons.busy
  }
}

/** An answer we could not read: not JSON, or not the documented shape. */
export class KieBadPayload extends Schema.TaggedError<KieBadPayload>()("KieBadPayload", {
  operation: KieOperation,
  message: Schema.String
}) {
  get retryable(): boolean {
    return true
  }
  get userReason(): UserReason {
    return reasons.badAnswer
  }
}

/**
 * createTask may have reached Kie (a timeout or a broken connection after the
 * request was sent, a gateway timeout, or an unreadable success answer), so a
 * task may exist and be billed. Never retried automatically: a retry could
 * bill a second task.
 *
 * `ref` identifies the attempt: in webhook mode it is in the callBackUrl, so
 * if Kie did create the task its callback is matched by `ref` and
 * `KieCallbacks.findTaskIdByRef(ref)` (or `Kie.recoverTask(ref)`) yields
 * the task id; `recoverable` says whether that can happen at all.
 */
export class KieCreateTaskUncertain extends Schema.TaggedError<KieCreateTaskUncertain>()("KieCreateTaskUncertain", {
  reason: Schema.Literals(["timeout", "connection-lost", "gateway-timeout", "unreadable-answer"]),
  ref: Schema.String,
  recoverable: Schema.Boolean,
  message: Schema.String
}) {
  get retryable(): boolean {
    return false
  }
  get userReason(): UserReason {
    return reasons.unconfirmed
  }
}

/** The task ended in state `fail`: Kie could not generate the image (content filter, model error). */
export class KieTaskFailed extends Schema.TaggedError<KieTaskFailed>()("KieTaskFailed", {
  taskId: Schema.String,
  failCode: Schema.String,
  failMsg: Schema.String,
  message: Schema.String
}) {
  get retryable(): boolean {
    return false
  }
  get userReason(): UserReason {
    const detail = safeFailMessage(this.failMsg)
    return detail === undefined
      ? reasons.generationFailed
      : {
        en: `The image could not be generated: ${detail}`,
        ru: `Не удалось сгенерировать картинку: ${detail}`
      }
  }
}

/** awaitResult gave up after GENERATION_TIMEOUT_MS. The task may still finish (and was billed). */
export class KieGenerationTimeout extends Schema.TaggedError<KieGenerationTimeout>()("KieGenerationTimeout", {
  taskId: Schema.String,
  timeoutMillis: Schema.Number,
  message: Schema.String
}) {
  get retryable(): boolean {
    return false
  }
  get userReason(): UserReason {
    return reasons.timeout
  }
}

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
  | KieGenerationTimeout

/** Errors of one createTask call. */
export type KieCreateTaskError = Exclude<
  KieError,
  KieRequestTimeout | KieTransportError | KieBadPayload | KieTaskFailed | KieGenerationTimeout
>

/** Errors of one getTask call. */
export type KieGetTaskError = Exclude<KieError, KieCreateTaskUncertain | KieTaskFailed | KieGenerationTimeout>

/** Errors of awaitResult. */
export type KieAwaitError = KieGetTaskError | KieTaskFailed | KieGenerationTimeout

const KIE_ERROR_TAGS: ReadonlySet<string> = new Set<KieError["_tag"]>([
  "KieUnauthorized",
  "KieInsufficientCredits",
  "KieNotFound",
  "KieValidationFailed",
  "KieRateLimited",
  "KieUsageLimitExceeded",
  "KieMaintenance",
  "KieServerError",
  "KieGenerationFailed",
  "KieFeatureDisabled",
  "KieUnexpectedResponse",
  "KieRequestTimeout",
  "KieConnectionFailed",
  "KieTransportError",
  "KieBadPayload",
  "KieCreateTaskUncertain",
  "KieTaskFailed",
  "KieGenerationTimeout"
])

export const isKieError = (u: unknown): u is KieError =>
  typeof u === "object" && u !== null && KIE_ERROR_TAGS.has((u as { _tag?: unknown })._tag as string)

/** The reason to show a user, in their language. */
export const userReason = (error: KieError, language: Language): string => error.userReason[language]

/**
 * Kie's failMsg, if it is fit to show a user: short plain text, no links or
 * markup, no stack traces. Anything else is replaced by a generic reason.
 */
export const safeFailMessage = (failMsg: string): string | undefined => {
  const text = failMsg.replace(/\s+/g, " ").trim()
  if (text.length < 3 || text.length > 200) return undefined
  if (/https?:|www\.|[<>{}\[\]`\\]|\bat\s+\S+\s*\(|Exception|Traceback|\berror code\b/i.test(text)) return undefined
  if (!/^[\p{L}\p{N}\p{Zs}.,:;!?'"()%/+-]+$/u.test(text)) return undefined
  return text
}
