/**
 * Spans started and ended from plain callbacks, with no fiber and no Effect:
 * the tracer, clock and `TracerEnabled` of the context they were made in.
 *
 * When to use: only on a hot path that is answered from Node callbacks
 * without a fiber (the webhook's direct route and the inbox's store behind
 * it), so that its requests are traced under the same names as everywhere
 * else. Anywhere an Effect runs, `Effect.withSpan` is the way.
 *
 * Details: a span's parent is given explicitly (there is no current span
 * without a fiber); with none it starts a trace of its own. Span
 * annotations and links set in the context (`Tracer.SpanAnnotations`, …)
 * are not applied, and the trace level is not checked: nothing of ours sets
 * them.
 *
 * Gotchas: every started span must be ended, exactly once.
 */
import { Context, Effect, Option, References, type Exit, type Tracer } from "effect"

/** Start and end of spans from plain code. */
export interface PlainSpans {
  /** Starts a span now, under `parent` when given. */
  readonly start: (
    name: string,
    options?: {
      readonly parent?: Tracer.AnySpan | undefined
      readonly kind?: Tracer.SpanKind | undefined
      readonly attributes?: Readonly<Record<string, unknown>> | undefined
    }
  ) => Tracer.Span
  /** Ends `span` now with `exit`. */
  readonly end: (span: Tracer.Span, exit: Exit.Exit<unknown, unknown>) => void
}

/** Tracing switched off (`References.TracerEnabled`): one unsampled span stands for every span. */
const noSpans = (tracer: Tracer.Tracer): PlainSpans => {
  const none = tracer.span({
    name: "disabled",
    parent: Option.none(),
    annotations: Context.empty(),
    links: [],
    startTime: 0n,
    kind: "internal",
    root: true,
    sampled: false
  })
  return { start: () => none, end: () => undefined }
}

/** Plain spans with the current context's tracer and clock. */
export const plainSpans: Effect.Effect<PlainSpans> = Effect.gen(function*() {
  const tracer = yield* Effect.tracer
  if (!(yield* References.TracerEnabled)) return noSpans(tracer)
  const clock = yield* Effect.clockWith(Effect.succeed)
  return {
    start: (name, options) => {
      const parent = options?.parent === undefined ? Option.none() : Option.some(options.parent)
      const span = tracer.span({
        name,
        parent,
        annotations: Context.empty(),
        links: [],
        startTime: clock.currentTimeNanosUnsafe(),
        kind: options?.kind ?? "internal",
        root: false,
        sampled: options?.parent?.sampled ?? true
      })
      const attributes = options?.attributes
      if (attributes !== undefined) { for (const key in attributes) span.attribute(key, attributes[key]) }
      return span
    },
    end: (span, exit) => span.end(clock.currentTimeNanosUnsafe(), exit)
  }
})
