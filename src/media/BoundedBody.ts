/**
 * Collects a response body into one buffer with a hard size limit, so one
 * download holds at most `maxBytes` (plus growth slack when the length is not
 * declared) and no list of chunks is ever concatenated into a second copy.
 *
 * Details: with a declared `Content-Length` (already checked against the
 * limit) the buffer is allocated once at that size; without one it starts
 * small and doubles, never past the limit. `bytes` is a view of the filled
 * part, not a copy. The buffer is allocated outside Node's shared pool, so the
 * view's `ArrayBuffer` holds this body only.
 */

/** First allocation when the length is not declared. */
export const INITIAL_CAPACITY = 256 * 1024

/** A body being received; `append` refuses the chunk that would pass the limit. */
export class BoundedBody {
  private readonly maxBytes: number
  private buffer: Buffer
  private filled = 0

  constructor(maxBytes: number, declared?: number) {
    this.maxBytes = maxBytes
    const first = declared !== undefined && declared > 0 ? declared : INITIAL_CAPACITY
    this.buffer = Buffer.allocUnsafeSlow(Math.min(first, maxBytes))
  }

  /** Bytes received so far. */
  get size(): number {
    return this.filled
  }

  /** Adds a chunk; false (and nothing added) when the body would exceed the limit. */
  append(chunk: Uint8Array): boolean {
    const needed = this.filled + chunk.length
    if (needed > this.maxBytes) return false
    if (needed > this.buffer.length) this.grow(needed)
    this.buffer.set(chunk, this.filled)
    this.filled = needed
    return true
  }

  /** The received bytes (a view of the buffer). */
  bytes(): Uint8Array {
    return new Uint8Array(this.buffer.buffer, this.buffer.byteOffset, this.filled)
  }

  private grow(needed: number) {
    const capacity = Math.min(Math.max(needed, this.buffer.length * 2), this.maxBytes)
    const next = Buffer.allocUnsafeSlow(capacity)
    this.buffer.copy(next, 0, 0, this.filled)
    this.buffer = next
  }
}
