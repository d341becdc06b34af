/**
 * Reads the format and pixel size of a PNG, JPEG or WebP image from its bytes,
 * to decide whether Telegram accepts it as a photo or only as a document.
 * Only headers are read; nothing is decoded.
 */

/** The image formats whose headers this module reads. */
export type ImageFormat = "png" | "jpeg" | "webp"

/** An image's format and pixel size, from its header. */
export interface ImageInfo {
  readonly format: ImageFormat
  readonly width: number
  readonly height: number
}

const u16be = (b: Uint8Array, o: number) => (b[o]! << 8) | b[o + 1]!
const u16le = (b: Uint8Array, o: number) => b[o]! | (b[o + 1]! << 8)
const u24le = (b: Uint8Array, o: number) => b[o]! | (b[o + 1]! << 8) | (b[o + 2]! << 16)
const u32be = (b: Uint8Array, o: number) => ((b[o]! << 24) >>> 0) + ((b[o + 1]! << 16) | (b[o + 2]! << 8) | b[o + 3]!)
const ascii = (b: Uint8Array, o: number, n: number) => String.fromCharCode(...b.subarray(o, o + n))

const png = (b: Uint8Array): ImageInfo | undefined => {
  if (b.length < 24 || u32be(b, 0) !== 0x89504e47 || ascii(b, 12, 4) !== "IHDR") return undefined
  return { format: "png", width: u32be(b, 16), height: u32be(b, 20) }
}

const jpeg = (b: Uint8Array): ImageInfo | undefined => {
  if (b.length < 4 || b[0] !== 0xff || b[1] !== 0xd8) return undefined
  let o = 2
  // Walk the marker segments to the first start-of-frame (SOF0–SOF15 except DHT/JPG/DAC).
  for (let guard = 0; guard < 10_000 && o + 9 < b.length; guard++) {
    if (b[o] !== 0xff) return undefined
    const marker = b[o + 1]!
    if (marker === 0xff) {
      o++
      continue
    }
    if (marker === 0xd8 || (marker >= 0xd0 && marker <= 0xd7) || marker === 0x01) {
      o += 2
      continue
    }
    const length = u16be(b, o + 2)
    if (length < 2) return undefined
    const isFrame = marker >= 0xc0 && marker <= 0xcf && marker !== 0xc4 && marker !== 0xc8 && marker !== 0xcc
    if (isFrame) return { format: "jpeg", height: u16be(b, o + 5), width: u16be(b, o + 7) }
    o += 2 + length
  }
  return undefined
}

const webp = (b: Uint8Array): ImageInfo | undefined => {
  if (b.length < 30 || ascii(b, 0, 4) !== "RIFF" || ascii(b, 8, 4) !== "WEBP") return undefined
  const chunk = ascii(b, 12, 4)
  if (chunk === "VP8 " && b[23] === 0x9d && b[24] === 0x01 && b[25] === 0x2a) {
    return { format: "webp", width: u16le(b, 26) & 0x3fff, height: u16le(b, 28) & 0x3fff }
  }
  if (chunk === "VP8L" && b[20] === 0x2f) {
    const bits = b[21]! | (b[22]! << 8) | (b[23]! << 16) | (b[24]! << 24)
    return { format: "webp", width: (bits & 0x3fff) + 1, height: ((bits >>> 14) & 0x3fff) + 1 }
  }
  if (chunk === "VP8X") return { format: "webp", width: u24le(b, 24) + 1, height: u24le(b, 27) + 1 }
  return undefined
}

/** The format and size of PNG, JPEG or WebP bytes; `undefined` for anything else or a cut-off header. */
export const imageInfo = (bytes: Uint8Array): ImageInfo | undefined => png(bytes) ?? jpeg(bytes) ?? webp(bytes)

/** Telegram's limits for an uploaded photo (Bot API sendPhoto). */
export const PHOTO_MAX_BYTES = 10 * 1024 * 1024
/** Width plus height may be at most this for a photo. */
export const PHOTO_MAX_DIMENSION_SUM = 10_000
/** The longer side may be at most this many times the shorter for a photo. */
export const PHOTO_MAX_RATIO = 20
/** Telegram's limit for an uploaded document. */
export const DOCUMENT_MAX_BYTES = 50 * 1024 * 1024

/** Whether Telegram accepts these bytes as a photo; otherwise they go as a document only. */
export const fitsAsPhoto = (size: number, info: ImageInfo | undefined): boolean =>
  info !== undefined &&
  size <= PHOTO_MAX_BYTES &&
  info.width > 0 && info.height > 0 &&
  info.width + info.height <= PHOTO_MAX_DIMENSION_SUM &&
  Math.max(info.width / info.height, info.height / info.width) <= PHOTO_MAX_RATIO
