/**
 * The sandbox's local model paints real pictures: deterministic from the
 * prompt, different for different prompts, at the size the ratio asks; an
 * edit of a PNG (with the row filters browsers write) is visibly different
 * and keeps its size. FakeKie serves them when `painter` is set.
 */
import { deflateSync } from "node:zlib"
import { describe, expect, it } from "vitest"
import { FakeKie, localResult } from "./fakes/FakeKie.ts"
import { decodePng, encodePng, paint, recolour } from "./fakes/Painter.ts"
import { TEST_KIE_KEY } from "./support/TestConfig.ts"

/** Share of pixels that differ between two same-sized pictures. */
const difference = (a: Uint8Array, b: Uint8Array) => {
  let differing = 0
  for (let i = 0; i < a.length; i += 3) {
    if (a[i] !== b[i] || a[i + 1] !== b[i + 1] || a[i + 2] !== b[i + 2]) differing++
  }
  return differing / (a.length / 3)
}

/** An RGBA PNG whose rows use every filter type (Sub, Up, Average, Paeth), like a browser's encoder. */
const filteredRgbaPng = (width: number, height: number) => {
  const rows: Array<Buffer> = []
  const pixel = (x: number, y: number, c: number) => (x * 7 + y * 13 + c * 50) & 0xff
  for (let y = 0; y < height; y++) {
    const type = y % 5
    const row = Buffer.alloc(width * 4 + 1)
    row[0] = type
    for (let x = 0; x < width * 4; x++) {
      const value = x % 4 === 3 ? 255 : pixel(Math.floor(x / 4), y, x % 4)
      const a = x >= 4 ? (x % 4 === 3 ? 255 : pixel(Math.floor(x / 4) - 1, y, x % 4)) : 0
      const b = y > 0 ? (x % 4 === 3 ? 255 : pixel(Math.floor(x / 4), y - 1, x % 4)) : 0
      const c = x >= 4 && y > 0 ? (x % 4 === 3 ? 255 : pixel(Math.floor(x / 4) - 1, y - 1, x % 4)) : 0
      const p = a + b - c
      const paeth = Math.abs(p - a) <= Math.abs(p - b) && Math.abs(p - a) <= Math.abs(p - c)
        ? a
        : Math.abs(p - b) <= Math.abs(p - c)
        ? b
        : c
      const predictor = [0, a, b, (a + b) >> 1, paeth][type]!
      row[x + 1] = (value - predictor) & 0xff
    }
    rows.push(row)
  }
  const header = Buffer.alloc(13)
  header.writeUInt32BE(width, 0)
  header.writeUInt32BE(height, 4)
  header[8] = 8
  header[9] = 6
  // CRCs are left zero: decodePng does not check them.
  const chunk = (type: string, data: Buffer) => {
    const length = Buffer.alloc(4)
    length.writeUInt32BE(data.length)
    return Buffer.concat([length, Buffer.from(type, "ascii"), data, Buffer.alloc(4)])
  }
  return {
    png: Buffer.concat([
      Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]),
      chunk("IHDR", header),
      chunk("IDAT", deflateSync(Buffer.concat(rows))),
      chunk("IEND", Buffer.alloc(0))
    ]),
    pixel
  }
}

describe("Painter", () => {
  it("paints the same picture for the same prompt and a visibly different one for another", () => {
    const a = decodePng(paint("a red fox in the snow", 160, 90))!
    const again = decodePng(paint("a red fox in the snow", 160, 90))!
    const other = decodePng(paint("a blue whale at night", 160, 90))!
    expect([a.width, a.height]).toEqual([160, 90])
    expect(Buffer.from(again.pixels).equals(Buffer.from(a.pixels))).toBe(true)
    expect(difference(a.pixels, other.pixels)).toBeGreaterThan(0.5)
  })

  it("decodes filtered RGBA PNGs and recolours them visibly at the same size", () => {
    const { png, pixel } = filteredRgbaPng(20, 10)
    const decoded = decodePng(png)!
    expect([decoded.width, decoded.height]).toEqual([20, 10])
    const expected = Array.from(
      { length: 10 * 20 * 3 },
      (_, i) => pixel(Math.floor(i / 3) % 20, Math.floor(i / 60), i % 3)
    )
    expect([...decoded.pixels]).toEqual(expected)
    const edited = decodePng(recolour(png, "make it blue"))!
    expect([edited.width, edited.height]).toEqual([20, 10])
    expect(difference(edited.pixels, decoded.pixels)).toBeGreaterThan(0.9)
    // A round trip through our encoder keeps the pixels.
    expect(Buffer.from(decodePng(encodePng(decoded))!.pixels).equals(Buffer.from(decoded.pixels))).toBe(true)
  })

  it("FakeKie with a painter serves the prompt's picture at the ratio's size", async () => {
    const kie = await FakeKie.start({
      apiKey: TEST_KIE_KEY,
      painter: { shortSide: 90 },
      defaultTask: { steps: [localResult("p.png")] }
    })
    try {
      const created = await fetch(`${kie.url}/api/v1/jobs/createTask`, {
        method: "POST",
        headers: { authorization: `Bearer ${TEST_KIE_KEY}`, "content-type": "application/json" },
        body: JSON.stringify({ model: "z-image", input: { prompt: "a lighthouse", aspect_ratio: "16:9" } })
      }).then((r) => r.json() as Promise<{ data: { taskId: string } }>)
      const info = await fetch(`${kie.url}/api/v1/jobs/recordInfo?taskId=${created.data.taskId}`, {
        headers: { authorization: `Bearer ${TEST_KIE_KEY}` }
      }).then((r) => r.json() as Promise<{ data: { resultJson: string } }>)
      const url = (JSON.parse(info.data.resultJson) as { resultUrls: Array<string> }).resultUrls[0]!
      const picture = decodePng(Buffer.from(await (await fetch(url)).arrayBuffer()))!
      expect([picture.width, picture.height]).toEqual([160, 90])
      expect(Buffer.from(picture.pixels).equals(decodePng(paint("a lighthouse", 160, 90))!.pixels)).toBe(true)
    } finally {
      await kie.close()
    }
  })
})
