/**
 * One-line descriptions of database failures, for log lines and errors.
 *
 * The driver's own message often leaves out the server's reason (it sits in
 * the cause); these helpers put both in one line and never print the whole
 * error object, which may carry connection settings.
 */
import { Predicate } from "effect"
import type { SqlError } from "effect/sql/SqlError"

/** Whether `error` is the SQL layer's error. */
export const isSqlError = (error: unknown): error is SqlError => Predicate.isTagged(error, "SqlError")

/** The error's message plus the server's reason when the message lacks it. */
export const describeSqlError = (error: SqlError): string => {
  const cause = error.reason.cause as { message?: unknown } | undefined
  const detail = typeof cause?.message === "string" ? cause.message : ""
  return detail !== "" && !error.message.includes(detail) ? `${error.message}: ${detail}` : error.message
}

/** One line for an arbitrary failure (`Tag: message`), never the whole object. */
export const describeUnknown = (error: unknown): string => {
  if (isSqlError(error)) return describeSqlError(error)
  if (typeof error === "object" && error !== null) {
    const tagged = error as { _tag?: unknown; message?: unknown }
    const message = typeof tagged.message === "string" ? tagged.message : ""
    const tag = typeof tagged._tag === "string" ? tagged._tag : error instanceof Error ? error.name : "Error"
    return message === "" ? tag : `${tag}: ${message}`
  }
  return String(error)
}
