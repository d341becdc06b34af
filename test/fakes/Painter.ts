/**
 * Painter: the "model" behind FakeKie when a picture must be worth looking at
 * (the sandbox, the browser test). Pure TypeScript plus node:zlib: no image
 * libraries, no weights, no network.
 *
 * - `paint(prompt, width, height)`: a deterministic RGB PNG from the prompt
 *   (same prompt, same picture; different prompts look visibly different).
 * - `recolour(png, instruction)`: decodes a PNG (8-bit grey, RGB, RGBA; any
 *   filter; not interlaced), rotates its colours and tints it from the
 *   instruction, and mirrors it, so an edit is obvious at a glance.
 */
import { deflateSync, inflateSync } from "node:zlib"
import { pngChunk } from "../support/images.ts"

const SIGNATURE = Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a])

/** An RGB picture in memory: 3 bytes a pixel, rows top to bottom. */
export interface Rgb {
  readonly width: number
  readonly height: number
  readonly pixels: Uint8Array
}

/** Encodes RGB pixels as a PNG (filter 0 on every row). */
export const encodePng = (image: Rgb): Buffer => {
  const { width, height, pixels } = image
  const header = Buffer.alloc(13)
  header.writeUInt32BE(width, 0)
  header.writeUInt32BE(height, 4)
  header[8] = 8
  header[9] = 2
  const raw = Buffer.alloc((width * 3 + 1) * height)
  for (let y = 0; y < height; y++) {
    raw[y * (width * 3 + 1)] = 0
    raw.set(pixels.subarray(y * width * 3, (y + 1) * width * 3), y * (width * 3 + 1) + 1)
  }
  return Buffer.concat([
    SIGNATURE,
    pngChunk("IHDR", header),
    pngChunk("IDAT", deflateSync(raw, { level: 6 })),
    pngChunk("IEND", Buffer.alloc(0))
  ])
}

const paeth = (a: number, b: number, c: number) => {
  const p = a + b - c
  const pa = Math.abs(p - a)
  const pb = Math.abs(p - b)
  const pc = Math.abs(p - c)
  return pa <= pb && pa <= pc ? a : pb <= pc ? b : c
}

/** Undoes PNG's per-row filters in place; `bpp` bytes a pixel. */
const unfilter = (raw: Buffer, width: number, height: number, bpp: number): Uint8Array => {
  const stride = width * bpp
  const out = new Uint8Array(stride * height)
  for (let y = 0; y < height; y++) {
    const type = raw[y * (stride + 1)]!
    const row = raw.subarray(y * (stride + 1) + 1, (y + 1) * (stride + 1))
    for (let x = 0; x < stride; x++) {
      const a = x >= bpp ? out[y * stride + x - bpp]! : 0
      const b = y > 0 ? out[(y - 1) * stride + x]! : 0
      const c = x >= bpp && y > 0 ? out[(y - 1) * stride + x - bpp]! : 0
      const predictor = type === 1 ? a : type === 2 ? b : type === 3 ? (a + b) >> 1 : type === 4 ? paeth(a, b, c) : 0
      out[y * stride + x] = (row[x]! + predictor) & 0xff
    }
  }
  return out
}

/** Decodes an 8-bit, non-interlaced grey/RGB/RGBA PNG to RGB; `undefined` for anything else. */
export const decodePng = (png: Uint8Array): Rgb | undefined => {
  const bytes = Buffer.from(png)
  if (bytes.length < 33 || !bytes.subarray(0, 8).equals(SIGNATURE)) return undefined
  let offset = 8
  let width = 0, height = 0, depth = 0, colour = 0, interlace = 0
  const data: Array<Buffer> = []
  while (offset + 8 <= bytes.length) {
    const length = bytes.readUInt32BE(offset)
    const type = bytes.toString("ascii", offset + 4, offset + 8)
    const body = bytes.subarray(offset + 8, offset + 8 + length)
    if (type === "IHDR") {
      width = body.readUInt32BE(0)
      height = body.readUInt32BE(4)
      ;[depth, colour, interlace] = [body[8]!, body[9]!, body[12]!]
    } else if (type === "IDAT") data.push(body)
    else if (type === "IEND") break
    offset += 12 + length
  }
  const bpp = colour === 0 ? 1 : colour === 2 ? 3 : colour === 4 ? 2 : colour === 6 ? 4 : 0
  if (depth !== 8 || interlace !== 0 || bpp === 0 || width === 0 || height === 0) return undefined
  const plain = unfilter(inflateSync(Buffer.concat(data)), width, height, bpp)
  const pixels = new Uint8Array(width * height * 3)
  for (let i = 0; i < width * height; i++) {
    const grey = bpp <= 2
    pixels[i * 3] = plain[i * bpp]!
    pixels[i * 3 + 1] = grey ? plain[i * bpp]! : plain[i * bpp + 1]!
    pixels[i * 3 + 2] = grey ? plain[i * bpp]! : plain[i * bpp + 2]!
  }
  return { width, height, pixels }
}

/** FNV-1a of the text, then a small PRNG (mulberry32) seeded with it: the same prompt, the same picture. */
const randomFrom = (text: string) => {
  let seed = 0x811c9dc5
  for (const char of text) seed = Math.imul(seed ^ char.codePointAt(0)!, 0x01000193) >>> 0
  return () => {
    seed = (seed + 0x6d2b79f5) >>> 0
    let t = seed
    t = Math.imul(t ^ (t >>> 15), t | 1)
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296
  }
}

const hsl = (h: number, s: number, l: number): [number, number, number] => {
  const k = (n: number) => (n + h * 12) % 12
  const a = s * Math.min(l, 1 - l)
  const f = (n: number) => l - a * Math.max(-1, Math.min(k(n) - 3, 9 - k(n), 1))
  return [Math.round(f(0) * 255), Math.round(f(8) * 255), Math.round(f(4) * 255)]
}

/** A deterministic picture for `prompt`: a sky-like gradient, a sun, hills and a few shapes. */
export const paintRgb = (prompt: string, width: number, height: number): Rgb => {
  const random = randomFrom(prompt.trim().toLowerCase())
  const hue = random()
  const [top, bottom] = [hsl(hue, 0.7, 0.35 + random() * 0.2), hsl((hue + 0.15 + random() * 0.2) % 1, 0.8, 0.75)]
  const sun = { x: random() * width, y: random() * height * 0.5, r: (0.08 + random() * 0.12) * Math.min(width, height) }
  const sunColour = hsl((hue + 0.5) % 1, 0.9, 0.6)
  const hills = Array.from({ length: 3 }, (_, i) => ({
    base: height * (0.6 + i * 0.12),
    amp: height * (0.04 + random() * 0.08),
    freq: 1 + random() * 4,
    phase: random() * 6.28,
    colour: hsl((hue + 0.3 + i * 0.08) % 1, 0.5, 0.25 + i * 0.1)
  }))
  const blobs = Array.from({ length: 6 }, () => ({
    x: random() * width,
    y: random() * height,
    r: (0.03 + random() * 0.07) * Math.min(width, height),
    colour: hsl(random(), 0.8, 0.55)
  }))
  const pixels = new Uint8Array(width * height * 3)
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) {
      const t = y / height
      let colour: [number, number, number] = [0, 1, 2].map((c) => top[c]! * (1 - t) + bottom[c]! * t) as any
      if ((x - sun.x) ** 2 + (y - sun.y) ** 2 < sun.r ** 2) colour = sunColour
      for (const blob of blobs) if ((x - blob.x) ** 2 + (y - blob.y) ** 2 < blob.r ** 2) colour = blob.colour
      for (const hill of hills) {
        if (y > hill.base + hill.amp * Math.sin((x / width) * hill.freq * 6.28 + hill.phase)) colour = hill.colour
      }
      pixels.set(colour, (y * width + x) * 3)
    }
  }
  return { width, height, pixels }
}

/** `paintRgb` as PNG bytes. */
export const paint = (prompt: string, width: number, height: number): Buffer =>
  encodePng(paintRgb(prompt, width, height))

/**
 * An edit anyone can see: colours rotated (r,g,b → b,r,g), tinted by a colour
 * from the instruction, and the picture mirrored. A file that is not a PNG
 * this decoder reads gets a painted picture of the instruction instead.
 */
export const recolour = (png: Uint8Array, instruction: string, fallback = { width: 512, height: 512 }): Buffer => {
  const image = decodePng(png)
  if (image === undefined) return paint(instruction, fallback.width, fallback.height)
  const random = randomFrom(instruction.trim().toLowerCase())
  const tint = hsl(random(), 0.9, 0.5)
  const { width, height, pixels } = image
  const out = new Uint8Array(pixels.length)
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) {
      const from = (y * width + (width - 1 - x)) * 3
      const [r, g, b] = [pixels[from]!, pixels[from + 1]!, pixels[from + 2]!]
      const to = (y * width + x) * 3
      out[to] = Math.round(b * 0.6 + tint[0] * 0.4)
      out[to + 1] = Math.round(r * 0.6 + tint[1] * 0.4)
      out[to + 2] = Math.round(g * 0.6 + tint[2] * 0.4)
    }
  }
  return encodePng({ width, height, pixels: out })
}
