/**
 * The model catalog: every entry's createTask request, built from the catalog
 * and sent over real HTTP to the fake Kie, which checks each model's input
 * the way Kie documents it (written independently in `FAKE_MODELS`). A
 * shape the model would refuse is a typed error before anything is sent;
 * results come back in the size of the ratio asked for.
 */
import { assert, describe, layer } from "@effect/vitest"
import { Effect, Result } from "effect"
import { Kie, type KieShape } from "../src/kie/Kie.ts"
import { CATALOG, checkInput, modelOf, unknownModelId } from "../src/kie/ModelCatalog.ts"
import { imageInfo } from "../src/media/ImageInfo.ts"
import { FAKE_MODELS, FakeKie, localResult } from "./fakes/FakeKie.ts"
import { KieStack, KieTestDatabase } from "./support/KieTestStack.ts"
import { TEST_KIE_KEY } from "./support/TestConfig.ts"

const withKie = <A, E>(body: (fake: FakeKie, kie: KieShape) => Effect.Effect<A, E, any>) =>
  Effect.scoped(Effect.gen(function*() {
    // One task per ratio of every model: more than Kie's 20 per 10 s, with no time passing.
    const fake = yield* FakeKie.scoped({ apiKey: TEST_KIE_KEY, createLimit: { count: 1000, windowMs: 10_000 } })
    return yield* Effect.gen(function*() {
      const kie = yield* Kie
      return yield* body(fake, kie)
    }).pipe(Effect.provide(KieStack(fake, { KIE_CREATE_RATE: "1000/10s" })))
  }))

const photo = (n: number) => Array.from({ length: n }, (_, i) => `https://tempfile.redpandaai.co/u/photo-${i}.jpg`)

layer(KieTestDatabase, { timeout: "120 seconds" })("ModelCatalog", (it) => {
  it("has the ten models of the issue, each in the fake's table, text models without and editors with an image field", () => {
    const ids = CATALOG.map((model) => model.id)
    assert.deepStrictEqual(ids, [
      "z-image",
      "google/nano-banana",
      "seedream/4.5-text-to-image",
      "flux-2/pro-text-to-image",
      "gpt-image/1.5-text-to-image",
      "google/imagen4-fast",
      "google/nano-banana-edit",
      "seedream/4.5-edit",
      "flux-2/pro-image-to-image",
      "qwen/image-edit"
    ])
    for (const model of CATALOG) {
      assert.isDefined(FAKE_MODELS[model.id], model.id)
      assert.isAbove(model.pricePerImage, 0)
      assert.isAbove(model.ratios.length, 0)
      // Each callback data `zimage:model:<id>` fits Telegram's 64 bytes.
      assert.isAtMost(Buffer.byteLength(`zimage:model:${model.id}`), 64)
    }
    assert.strictEqual(unknownModelId(["z-image", "google/nano-banana"], false), undefined)
    assert.strictEqual(unknownModelId(["z-image", "midjourney"], false), "midjourney")
    assert.strictEqual(unknownModelId(["google/nano-banana-edit"], false), "google/nano-banana-edit")
    assert.strictEqual(unknownModelId(["qwen/image-edit"], true), undefined)
  })

  describe("every entry's request, over HTTP to the fake Kie", () => {
    it.effect("each ratio of each model is accepted (for editors with their most pictures) and the result has that ratio", () =>
      withKie((fake, kie) =>
        Effect.gen(function*() {
          for (const model of CATALOG) {
            for (const ratio of model.ratios) {
              const images = model.images === undefined ? [] : photo(model.images.max)
              fake.scriptNextTasks({ steps: [localResult(`r.png`)] })
              const taskId = yield* kie.createTask({
                model: model.id,
                prompt: "a fox",
                aspectRatio: ratio,
                imageUrls: images
              })
              const task = fake.tasks.get(taskId)!
              assert.strictEqual(task.body.model, model.id)
              assert.strictEqual(task.body.input.prompt, "a fox")
              if (model.images !== undefined) {
                const sent = task.body.input[model.images.field]
                assert.deepStrictEqual(sent, model.images.many ? images : images[0], `${model.id} images`)
              }
              const state = yield* kie.getTaskOnce(taskId)
              assert.strictEqual(state._tag, "Success")
              if (state._tag !== "Success") continue
              const bytes = Buffer.from(
                yield* Effect.promise(() => fetch(state.resultUrls[0]).then((r) => r.arrayBuffer()))
              )
              const info = imageInfo(bytes)!
              const [w, h] = ratio.split(":").map(Number) as [number, number]
              assert.approximately(info.width / info.height, w / h, 0.05, `${model.id} ${ratio}`)
            }
          }
          assert.strictEqual(fake.counters.rejected422, 0)
          assert.strictEqual(fake.counters.tasksCreated, CATALOG.reduce((n, model) => n + model.ratios.length, 0))
        })
      ))

    it.effect("z-image keeps the seed's exact input; an edit without a ratio sends none (the photo's shape)", () =>
      withKie((fake, kie) =>
        Effect.gen(function*() {
          const zimage = yield* kie.createTask({ prompt: "p", aspectRatio: "16:9" })
          assert.deepStrictEqual(fake.tasks.get(zimage)!.body.input, {
            prompt: "p",
            aspect_ratio: "16:9",
            nsfw_checker: true
          })
          const edit = yield* kie.createTask({
            model: "google/nano-banana-edit",
            prompt: "make it blue",
            aspectRatio: "auto",
            imageUrls: photo(1)
          })
          assert.deepStrictEqual(fake.tasks.get(edit)!.body.input, {
            prompt: "make it blue",
            output_format: "png",
            image_urls: photo(1)
          })
          const qwen = yield* kie.createTask({
            model: "qwen/image-edit",
            prompt: "p",
            aspectRatio: "9:16",
            imageUrls: photo(1)
          })
          assert.deepStrictEqual(fake.tasks.get(qwen)!.body.input, {
            prompt: "p",
            image_size: "portrait_16_9",
            image_url: photo(1)[0]
          })
        })
      ))

    it.effect("a shape the model refuses is KieValidationFailed naming model and field, and nothing is sent", () =>
      withKie((fake, kie) =>
        Effect.gen(function*() {
          const cases = [
            [{ model: "gpt-image/1.5-text-to-image", prompt: "p", aspectRatio: "16:9" as const }, "input.aspect_ratio"],
            [{ model: "z-image", prompt: "a".repeat(1001), aspectRatio: "1:1" as const }, "input.prompt"],
            [
              { model: "seedream/4.5-text-to-image", prompt: "a".repeat(3001), aspectRatio: "1:1" as const },
              "input.prompt"
            ],
            [{ model: "google/nano-banana-edit", prompt: "p", aspectRatio: "1:1" as const }, "input.image_urls"],
            [
              { model: "flux-2/pro-image-to-image", prompt: "p", aspectRatio: "1:1" as const, imageUrls: photo(9) },
              "input.input_urls"
            ],
            [
              { model: "qwen/image-edit", prompt: "p", aspectRatio: "21:9" as const, imageUrls: photo(1) },
              "input.image_size"
            ],
            [{ model: "z-image", prompt: "p", aspectRatio: "1:1" as const, imageUrls: photo(1) }, "input.image_urls"],
            [{ model: "dall-e", prompt: "p", aspectRatio: "1:1" as const }, "unknown model dall-e"]
          ] as const
          for (const [request, field] of cases) {
            const error = yield* kie.createTask(request).pipe(Effect.flip)
            assert.strictEqual(error._tag, "KieValidationFailed", field)
            assert.include(error.message, field)
            if (request.model !== "dall-e") assert.include(error.message, request.model)
          }
          assert.strictEqual(fake.counters.createTask, 0)
        })
      ))
  })

  it.effect("the fake refuses, like Kie, each model's wrong input with a 422 naming the field", () =>
    Effect.scoped(Effect.gen(function*() {
      const fake = yield* FakeKie.scoped({ apiKey: TEST_KIE_KEY })
      const send = (body: unknown) =>
        Effect.promise(() =>
          fetch(`${fake.url}/api/v1/jobs/createTask`, {
            method: "POST",
            headers: { authorization: `Bearer ${TEST_KIE_KEY}`, "content-type": "application/json" },
            body: JSON.stringify(body)
          }).then((r) => r.json() as Promise<{ code: number; msg: string }>)
        )
      const wrong = [
        [{ model: "google/nano-banana", input: { prompt: "p", aspect_ratio: "7:5" } }, "input.aspect_ratio"],
        [{ model: "flux-2/pro-image-to-image", input: { prompt: "p", image_urls: photo(1) } }, "input.input_urls"],
        [{ model: "qwen/image-edit", input: { prompt: "p", image_url: photo(2) } }, "input.image_url"],
        [{ model: "seedream/4.5-edit", input: { prompt: "p", image_urls: photo(15) } }, "input.image_urls"],
        [{ model: "google/imagen4-fast", input: { prompt: "p", nsfw_checker: true } }, "input.nsfw_checker"]
      ] as const
      for (const [body, field] of wrong) {
        const answer = yield* send(body)
        assert.strictEqual(answer.code, 422)
        assert.include(answer.msg, field)
      }
      assert.strictEqual(fake.counters.tasksCreated, 0)
    })))

  it("the catalog's own check agrees with the fake on every refusal above (Schema, before sending)", () => {
    const refused = checkInput(modelOf("qwen/image-edit"), { prompt: "p", image_url: "file:///etc/passwd" })
    assert.isTrue(Result.isFailure(refused))
    const accepted = checkInput(modelOf("google/imagen4-fast"), { prompt: "p", aspect_ratio: "3:4" })
    assert.isTrue(Result.isSuccess(accepted))
  })
})
