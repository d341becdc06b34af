/**
 * Timestamps read from anywhere (a database row, a JSON field, a log) turned
 * into UTC instants, and ages that are always a sensible number.
 *
 * Subtracting a naive datetime from an aware one is a classic crash. Here a
 * timestamp without a zone is UTC, never the host's local time (which is what
 * `new Date("2024-01-01 10:00")` would assume), and an age is never negative
 * (clock skew between instances) or NaN (an unreadable value).
 */
import { DateTime, Duration, Option } from "effect"

/**
 * `YYYY-MM-DD[T ]HH:MM[:SS[.fraction]][zone]`, the zone being `Z`, `±HH`,
 * `±HHMM` or `±HH:MM` (PostgreSQL prints `+00`, ISO 8601 prints `+00:00`).
 */
const TIMESTAMP =
  /^(\d{4})-(\d{2})-(\d{2})(?:[T ](\d{2}):(\d{2})(?::(\d{2})(?:[.,](\d{1,9}))?)?)?\s*(?:(Z|z|UTC|GMT)|([+-])(\d{2})(?::?(\d{2}))?)?$/

const daysInMonth = (year: number, month: number) => new Date(Date.UTC(year, month, 0)).getUTCDate()

/** Parses a timestamp string; one without a zone is taken as UTC. */
export const parseUtc = (text: string): Option.Option<DateTime.Utc> => {
  const match = TIMESTAMP.exec(text.trim())
  if (match === null) return Option.none()
  const [, y, mo, d, h = "0", mi = "0", s = "0", fraction = "", , sign, offH, offM = "0"] = match
  const year = Number(y)
  const month = Number(mo)
  const day = Number(d)
  const hour = Number(h)
  const minute = Number(mi)
  const second = Number(s)
  if (month < 1 || month > 12 || day < 1 || day > daysInMonth(year, month)) return Option.none()
  if (hour > 23 || minute > 59 || second > 59) return Option.none()
  const offsetMinutes = sign === undefined ? 0 : (sign === "-" ? -1 : 1) * (Number(offH) * 60 + Number(offM))
  if (Math.abs(offsetMinutes) > 18 * 60 || Number(offM) > 59) return Option.none()
  const millis = Number((fraction + "000").slice(0, 3))
  const date = new Date(0)
  // setUTCFullYear, unlike Date.UTC, does not map years 0-99 to 1900-1999.
  date.setUTCFullYear(year, month - 1, day)
  date.setUTCHours(hour, minute, second, millis)
  const epochMillis = date.getTime() - offsetMinutes * 60_000
  return Number.isFinite(epochMillis) ? DateTime.make(epochMillis) : Option.none()
}

/**
 * Any timestamp-like value as a UTC instant: a `DateTime`, a valid `Date`,
 * epoch milliseconds, or a string (naive strings are UTC). `None` for anything
 * else, including invalid dates and PostgreSQL's `infinity`.
 */
export const fromUnknown = (value: unknown): Option.Option<DateTime.Utc> => {
  if (DateTime.isDateTime(value)) return Option.some(DateTime.toUtc(value))
  if (value instanceof Date) return Number.isFinite(value.getTime()) ? DateTime.make(value) : Option.none()
  if (typeof value === "number") return Number.isFinite(value) ? DateTime.make(value) : Option.none()
  if (typeof value === "string") return parseUtc(value)
  return Option.none()
}

/** `now - then`, never negative: a timestamp from the future (clock skew) is age zero. */
export const age = (now: DateTime.DateTime, then: DateTime.DateTime): Duration.Duration =>
  Duration.millis(Math.max(0, DateTime.toEpochMillis(now) - DateTime.toEpochMillis(then)))

/** Whole seconds, for logs and `/health`. */
export const toSeconds = (duration: Duration.Duration): number => Math.floor(Duration.toMillis(duration) / 1000)
