/**
 * Recognises image bytes by their first bytes (magic numbers), so a result
 * download that answered with an error page, a script or anything else is
 * refused before it reaches Telegram or a user.
 *
 * Details: only the signature is looked at, nothing is decoded; `ImageInfo`
 * reads the pixel size later for the formats Telegram takes as a photo.
 */

/** The image formats a result may be in. */
export type ImageKind = "png" | "jpeg" | "webp" | "gif"

/** How many leading bytes `imageKind` needs to decide (WebP's `RIFF....WEBP` is the longest). */
export const MAGIC_BYTES = 12

const PNG_SIGNATURE = [0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]

const startsWith = (bytes: Uint8Array, offset: number, expected: ReadonlyArray<number>) =>
  bytes.length >= offset + expected.length && expected.every((byte, i) => bytes[offset + i] === byte)

const ascii = (text: string) => Array.from(text, (c) => c.charCodeAt(0))

/** The format of PNG, JPEG, WebP or GIF bytes by signature; `undefined` for anything else. */
export const imageKind = (bytes: Uint8Array): ImageKind | undefined => {
  if (startsWith(bytes, 0, PNG_SIGNATURE)) return "png"
  if (startsWith(bytes, 0, [0xff, 0xd8, 0xff])) return "jpeg"
  if (startsWith(bytes, 0, ascii("RIFF")) && startsWith(bytes, 8, ascii("WEBP"))) return "webp"
  if (startsWith(bytes, 0, ascii("GIF87a")) || startsWith(bytes, 0, ascii("GIF89a"))) return "gif"
  return undefined
}
