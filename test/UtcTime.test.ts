import { assert, describe, it } from "@effect/vitest"
import { DateTime, Duration, Option, Schema } from "effect"
import * as UtcTime from "../src/platform/UtcTime.ts"

/** Instants between 1970 and 2100, to the millisecond. */
const Instant = Schema.Int.check(Schema.isBetween({ minimum: 0, maximum: 4_102_444_800_000 }))
/** Zone offsets in minutes, as found in the wild (-12:00 … +14:00, incl. :30 and :45 zones). */
const OffsetMinutes = Schema.Int.check(Schema.isBetween({ minimum: -720, maximum: 840 }))

const pad = (n: number, width = 2) => String(Math.abs(n)).padStart(width, "0")

/** Wall-clock text of `epochMillis` seen at `offsetMinutes` from UTC. */
const wallClock = (epochMillis: number, offsetMinutes: number, separator: "T" | " ") => {
  const d = new Date(epochMillis + offsetMinutes * 60_000)
  return `${pad(d.getUTCFullYear(), 4)}-${pad(d.getUTCMonth() + 1)}-${pad(d.getUTCDate())}${separator}${
    pad(d.getUTCHours())
  }:${pad(d.getUTCMinutes())}:${pad(d.getUTCSeconds())}.${pad(d.getUTCMilliseconds(), 3)}`
}

const offsetSuffix = (minutes: number, style: number) => {
  const sign = minutes < 0 ? "-" : "+"
  const h = pad(Math.floor(Math.abs(minutes) / 60))
  const m = pad(Math.abs(minutes) % 60)
  return style === 0
    ? `${sign}${h}:${m}`
    : style === 1
    ? `${sign}${h}${m}`
    : m === "00"
    ? `${sign}${h}`
    : `${sign}${h}:${m}`
}

const millisOf = (value: Option.Option<DateTime.Utc>) => Option.map(value, DateTime.toEpochMillis)

/** Runs `f` with the process in another local time zone, as a host could be. */
const inZone = <A>(zone: string, f: () => A): A => {
  const before = process.env.TZ
  process.env.TZ = zone
  try {
    return f()
  } finally {
    if (before === undefined) delete process.env.TZ
    else process.env.TZ = before
  }
}

const hostZones = [
  "UTC",
  "Asia/Kolkata",
  "America/St_Johns",
  "Pacific/Chatham",
  "Asia/Kathmandu",
  "America/Los_Angeles"
]

describe("UtcTime", () => {
  it.prop(
    "a naive timestamp is UTC, whatever the host's zone",
    { at: Instant, separator: Schema.Literals(["T", " "]), zone: Schema.Literals(hostZones) },
    ({ at, separator, zone }) => {
      const text = wallClock(at, 0, separator)
      assert.deepStrictEqual(inZone(zone, () => millisOf(UtcTime.parseUtc(text))), Option.some(at))
    }
  )

  it.prop(
    "a timestamp with a zone offset (ISO or PostgreSQL style) is that instant",
    { at: Instant, offset: OffsetMinutes, style: Schema.Int.check(Schema.isBetween({ minimum: 0, maximum: 2 })) },
    ({ at, offset, style }) => {
      const text = wallClock(at, offset, " ") + offsetSuffix(offset, style)
      assert.deepStrictEqual(millisOf(UtcTime.parseUtc(text)), Option.some(at), text)
    }
  )

  it("reads Z, UTC, fractions of any length and date-only values", () => {
    const at = Date.UTC(2024, 1, 29, 23, 59, 58, 123)
    for (
      const text of ["2024-02-29T23:59:58.123Z", "2024-02-29 23:59:58.123456 UTC", "2024-02-29T23:59:58.123456789"]
    ) {
      assert.deepStrictEqual(millisOf(UtcTime.parseUtc(text)), Option.some(at), text)
    }
    assert.deepStrictEqual(millisOf(UtcTime.parseUtc("2024-02-29")), Option.some(Date.UTC(2024, 1, 29)))
    // Year 99 is year 99, not 1999 (Date.UTC's two-digit-year rule does not apply).
    const year99 = new Date(0)
    year99.setUTCFullYear(99, 0, 1)
    assert.deepStrictEqual(millisOf(UtcTime.parseUtc("0099-01-01 00:00:00")), Option.some(year99.getTime()))
    assert.isBelow(year99.getTime(), Date.UTC(0, 0, 1))
  })

  it("refuses what is not a timestamp instead of guessing", () => {
    for (const text of [
      "",
      "yesterday",
      "2024-02-30 10:00:00",
      "2023-02-29",
      "2024-13-01",
      "2024-01-01 24:00:00",
      "2024-01-01 10:00:00+25:00",
      "infinity",
      "1700000000"
    ]) {
      assert.isTrue(Option.isNone(UtcTime.parseUtc(text)), text)
    }
    for (const value of [new Date(Number.NaN), Number.NaN, Number.POSITIVE_INFINITY, null, undefined, {}, []]) {
      assert.isTrue(Option.isNone(UtcTime.fromUnknown(value)))
    }
  })

  it.prop(
    "fromUnknown agrees on Date, epoch millis, DateTime and naive text",
    { at: Instant },
    ({ at }) => {
      const expected = Option.some(at)
      assert.deepStrictEqual(millisOf(UtcTime.fromUnknown(new Date(at))), expected)
      assert.deepStrictEqual(millisOf(UtcTime.fromUnknown(at)), expected)
      assert.deepStrictEqual(millisOf(UtcTime.fromUnknown(DateTime.makeUnsafe(at))), expected)
      assert.deepStrictEqual(millisOf(UtcTime.fromUnknown(wallClock(at, 0, "T"))), expected)
    }
  )

  it.prop(
    "ages are never negative and never NaN",
    // oxlint-disable-next-line unicorn/no-thenable -- a property named after the instant it holds, never awaited
    { now: Instant, then: Instant },
    ({ now, then }) => {
      const age = Duration.toMillis(UtcTime.age(DateTime.makeUnsafe(now), DateTime.makeUnsafe(then)))
      assert.isFalse(Number.isNaN(age))
      assert.strictEqual(age, Math.max(0, now - then))
      const seconds = UtcTime.toSeconds(UtcTime.age(DateTime.makeUnsafe(now), DateTime.makeUnsafe(then)))
      assert.isTrue(Number.isInteger(seconds) && seconds >= 0)
    }
  )
})
