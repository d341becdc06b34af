import { assert, describe, it } from "@effect/vitest"
import { Schema } from "effect"
import { fitsAsPhoto, imageInfo, PHOTO_MAX_BYTES } from "../src/media/ImageInfo.ts"
import { makeJpegHeader, makePng, makeWebpHeader } from "./support/images.ts"

describe("ImageInfo", () => {
  it("reads PNG, JPEG and WebP sizes", () => {
    assert.deepStrictEqual(imageInfo(makePng(33, 17)), { format: "png", width: 33, height: 17 })
    assert.deepStrictEqual(imageInfo(makeJpegHeader(1344, 768)), { format: "jpeg", width: 1344, height: 768 })
    assert.deepStrictEqual(imageInfo(makeWebpHeader(768, 1344)), { format: "webp", width: 768, height: 1344 })
  })

  it("does not recognise other bytes", () => {
    assert.isUndefined(imageInfo(Buffer.from("<html>not an image</html>")))
    assert.isUndefined(imageInfo(new Uint8Array(0)))
  })

  it("applies Telegram's photo limits", () => {
    const square = { format: "png", width: 1024, height: 1024 } as const
    assert.isTrue(fitsAsPhoto(2_000_000, square))
    assert.isFalse(fitsAsPhoto(PHOTO_MAX_BYTES + 1, square), "over 10 MB")
    assert.isFalse(fitsAsPhoto(1000, { format: "png", width: 6000, height: 4001 }), "width + height over 10000")
    assert.isFalse(fitsAsPhoto(1000, { format: "png", width: 2100, height: 100 }), "ratio over 20")
    assert.isFalse(fitsAsPhoto(1000, undefined), "unknown format")
  })

  // Real magic numbers followed by garbage exercise the marker walking, not only the fast reject.
  const prefixes = [
    Buffer.from([0xff, 0xd8]),
    Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]),
    Buffer.from("RIFF\0\0\0\0WEBPVP8 ", "latin1"),
    Buffer.from("RIFF\0\0\0\0WEBPVP8L", "latin1"),
    Buffer.alloc(0)
  ]
  it.prop(
    "never throws on damaged or hostile bytes",
    [Schema.Int.check(Schema.isBetween({ minimum: 0, maximum: 4 })), Schema.Uint8Array],
    ([prefix, tail]) => {
      const info = imageInfo(Buffer.concat([prefixes[prefix]!, tail]))
      if (info !== undefined) {
        assert.isTrue(Number.isInteger(info.width) && info.width >= 0)
        assert.isTrue(Number.isInteger(info.height) && info.height >= 0)
      }
    },
    { arbitrary: { runs: 500 } }
  )
})
