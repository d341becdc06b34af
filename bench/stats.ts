/** Small statistics and formatting helpers shared by the bench scripts. */

export const median = (values: ReadonlyArray<number>): number => quantile(values, 0.5)

/** Nearest-rank quantile (`q` in 0..1) of unsorted values; NaN when empty. */
export const quantile = (values: ReadonlyArray<number>, q: number): number => {
  if (values.length === 0) return Number.NaN
  const sorted = Float64Array.from(values).sort()
  const rank = Math.min(sorted.length, Math.max(1, Math.ceil(q * sorted.length)))
  return sorted[rank - 1]!
}

export interface Percentiles {
  readonly p50: number
  readonly p95: number
  readonly p99: number
  readonly max: number
}

export const percentiles = (values: ReadonlyArray<number>): Percentiles => ({
  p50: quantile(values, 0.5),
  p95: quantile(values, 0.95),
  p99: quantile(values, 0.99),
  // Not Math.max(...values): a fast closed loop yields more samples than the stack holds arguments.
  max: values.reduce((max, value) => Math.max(max, value), values.length === 0 ? Number.NaN : -Infinity)
})

/** Milliseconds with a precision that suits their size. */
export const ms = (value: number): string =>
  Number.isNaN(value)
    ? "–"
    : value >= 1000
    ? `${(value / 1000).toFixed(2)} s`
    : value >= 100
    ? `${value.toFixed(0)} ms`
    : value >= 10
    ? `${value.toFixed(1)} ms`
    : `${value.toFixed(2)} ms`

export const latencies = (values: ReadonlyArray<number>): string => {
  const p = percentiles(values)
  return `${ms(p.p50)} / ${ms(p.p95)} / ${ms(p.p99)}`
}

export const rate = (perSecond: number): string => `${perSecond.toFixed(perSecond >= 100 ? 0 : 1)}/s`

export const mib = (bytes: number): string => `${(bytes / 1024 / 1024).toFixed(1)} MiB`

/** `median (min–max)` in milliseconds, for repeated timings. */
export const spread = (values: ReadonlyArray<number>): string =>
  values.length === 0
    ? "–"
    : values.length === 1
    ? ms(values[0]!)
    : `${ms(median(values))} (${ms(Math.min(...values))}–${ms(Math.max(...values))})`
