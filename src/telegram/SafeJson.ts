/**
 * Making a parsed Telegram update storable in a `jsonb` column.
 *
 * Why: JSON may carry text PostgreSQL's `jsonb` refuses, `\u0000` and
 * lone UTF-16 surrogates (`"\ud800"` without its pair). Such an update would
 * fail its INSERT every time: the webhook would answer 503 forever (Telegram
 * retries, and holds back the chat's later updates meanwhile) and the poller
 * would retry the batch forever without confirming it. Replacing the
 * offending code units with U+FFFD keeps everything else of the update; the
 * user's text loses only characters no one can see.
 *
 * When to use: on every update from Telegram before it is stored (the webhook
 * and the poller). Object keys are cleaned too, since they are text in jsonb
 * as well.
 */

/** NUL, a high surrogate not followed by a low one, or a low surrogate not preceded by a high one. */
// oxlint-disable-next-line eslint/no-control-regex -- NUL is exactly what has to be found
const UNSTORABLE = /\u0000|[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/
const UNSTORABLE_ALL = new RegExp(UNSTORABLE.source, "g")

/** The replacement character put where an unstorable code unit was. */
export const REPLACEMENT = "\uFFFD"

/** `text` with every NUL and lone surrogate replaced by U+FFFD; the same string when there is none. */
export const safeText = (text: string): string =>
  UNSTORABLE.test(text) ? text.replace(UNSTORABLE_ALL, REPLACEMENT) : text

/**
 * A JSON value (as `JSON.parse` returns it) whose strings and keys `jsonb`
 * accepts. Unchanged parts are shared, not copied; a value without anything
 * to replace is returned as it is.
 */
export const safeJson = <A>(value: A): A => clean(value) as A

/**
 * The escapes through which JSON text can carry what `UNSTORABLE` finds: `\u0000` and a
 * surrogate (`\uD800`–`\uDFFF`, any case). A literal backslash before such letters matches
 * too; `clean` then replaces nothing, as it should.
 */
const UNSTORABLE_ESCAPE = /\\u(?:0000|[dD][89abcdefABCDEF])/

/**
 * `JSON.parse(text)`, made storable as `safeJson` makes it. A JSON text can
 * carry NUL and lone surrogates only as `\u` escapes (or, if it is not from a
 * UTF-8 decoder, as raw lone surrogates), so a text with neither is returned
 * as parsed: the webhook's common case skips walking the whole update.
 */
export const parseSafeJson = (text: string): unknown => {
  const value: unknown = JSON.parse(text)
  return UNSTORABLE_ESCAPE.test(text) || UNSTORABLE.test(text) ? clean(value) : value
}

const clean = (value: unknown): unknown => {
  if (typeof value === "string") return safeText(value)
  if (Array.isArray(value)) {
    const items = value.map(clean)
    return items.some((item, i) => item !== value[i]) ? items : value
  }
  if (typeof value === "object" && value !== null) {
    let changed = false
    const entries = Object.entries(value).map(([key, item]) => {
      const cleanKey = safeText(key)
      const cleanItem = clean(item)
      if (cleanKey !== key || cleanItem !== item) changed = true
      return [cleanKey, cleanItem] as const
    })
    return changed ? Object.fromEntries(entries) : value
  }
  return value
}
