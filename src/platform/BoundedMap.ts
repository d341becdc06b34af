/**
 * Keeping an in-memory map of chats or users bounded, whatever traffic does.
 *
 * Details: `forgetDown` first forgets the entries `canForget` allows (state
 * that is back to its default, e.g. a full bucket); if that is not enough it
 * forgets the oldest entries (a `Map` iterates in insertion order) until the
 * map is at 90 % of `max`. Each call frees at least a tenth of the map, so a
 * caller that runs it when the map reaches `max` pays for it at most once
 * per `max / 10` insertions, however many entries are busy.
 *
 * Gotchas: forgetting a busy entry resets that chat or user to a fresh
 * state: the flood controls that use this are lenient for it, never strict.
 */

/** Shrinks `map` (at `max` entries) to at most 90 % of `max`; see the module doc. */
export const forgetDown = <K, V>(map: Map<K, V>, max: number, canForget: (value: V, key: K) => boolean): void => {
  const target = Math.floor(max * 0.9)
  for (const [key, value] of map) if (canForget(value, key)) map.delete(key)
  if (map.size <= target) return
  for (const key of map.keys()) {
    if (map.size <= target) return
    map.delete(key)
  }
}
