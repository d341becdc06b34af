/**
 * The Kie Market image models the bot can use, and how each one's createTask
 * `input` is built and checked. Every model shares createTask/recordInfo;
 * only `model` and `input` differ (`docs/external-apis.md`, the models table).
 *
 * A request is built from the catalog entry and then decoded field by field
 * with the entry's Schema: a wrong shape for a model (a ratio it does not
 * offer, a prompt over its limit, too many images, a field it does not know)
 * is a `KieValidationFailed` naming the model and the field *before*
 * anything is sent, so a 422 from Kie means Kie changed, not that we erred.
 *
 * | model id                      | image field        | ratio field    | prompt | $/image |
 * | ----------------------------- | ------------------ | -------------- | ------ | ------- |
 * | `z-image`                     | —                  | `aspect_ratio` | 1000   | 0.004   |
 * | `google/nano-banana`          | —                  | `aspect_ratio` | 5000   | 0.02    |
 * | `seedream/4.5-text-to-image`  | —                  | `aspect_ratio` | 3000   | 0.0325  |
 * | `flux-2/pro-text-to-image`    | —                  | `aspect_ratio` | 5000   | 0.025   |
 * | `gpt-image/1.5-text-to-image` | —                  | `aspect_ratio` | 5000   | 0.02    |
 * | `google/imagen4-fast`         | —                  | `aspect_ratio` | 5000   | 0.02    |
 * | `google/nano-banana-edit`     | `image_urls` 1–10  | `aspect_ratio` | 5000   | 0.02    |
 * | `seedream/4.5-edit`           | `image_urls` 1–14  | `aspect_ratio` | 3000   | 0.0325  |
 * | `flux-2/pro-image-to-image`   | `input_urls` 1–8   | `aspect_ratio` | 5000   | 0.025   |
 * | `qwen/image-edit`             | `image_url` (one)  | `image_size`   | 2000   | 0.03    |
 *
 * Gotchas: prices are Kie's pricing page of 2026-06-30 at the tier we send
 * (seedream `quality: basic`, flux `resolution: 1K`, gpt-image `quality:
 * medium`, qwen per megapixel at about 1 MP); check kie.ai/pricing before
 * quoting them. Prompt limits we were not told are capped at Telegram's
 * 4096-character message limit anyway, so 5000 means "whatever fits".
 */
import { Effect, Option, Result, Schema } from "effect"
import { type AppConfigShape, ConfigInvalid } from "../platform/AppConfig.ts"
import type { AspectRatio } from "../texts/Messages.ts"
import { KieValidationFailed } from "./KieErrors.ts"

/** How a model takes input pictures. */
export interface ImageInput {
  /** The `input` field that carries the URLs. */
  readonly field: string
  /** `true`: an array of URLs; `false`: one URL as a string. */
  readonly many: boolean
  /** Most pictures it takes in one request. */
  readonly max: number
}

/** One model of the catalog. */
export interface ModelSpec {
  /** Kie's model id, sent as `model`. */
  readonly id: string
  /** The name users see on buttons. */
  readonly name: string
  /** The `input` field of the ratio (or size). */
  readonly ratioField: "aspect_ratio" | "image_size"
  /** The ratios users may pick, in button order (`auto` never shown). */
  readonly ratios: ReadonlyArray<AspectRatio>
  /** Longest prompt in characters (code points). */
  readonly maxPrompt: number
  /** US dollars per picture at the tier we send. */
  readonly pricePerImage: number
  /** Set for models that edit: where the input pictures go. */
  readonly images: ImageInput | undefined
  /** Fields sent as they are with every request (the tier we pay for, the output format). */
  readonly fixed: Readonly<Record<string, unknown>>
  /** Whether the model takes `nsfw_checker` (KIE_NSFW_CHECKER). */
  readonly nsfwChecker: boolean
}

const RATIOS_5: ReadonlyArray<AspectRatio> = ["1:1", "16:9", "9:16", "4:3", "3:4"]
const RATIOS_BANANA: ReadonlyArray<AspectRatio> = [...RATIOS_5, "3:2", "2:3", "5:4", "4:5", "21:9"]
const RATIOS_SEEDREAM: ReadonlyArray<AspectRatio> = [...RATIOS_5, "3:2", "2:3", "21:9"]
const RATIOS_FLUX: ReadonlyArray<AspectRatio> = [...RATIOS_5, "3:2", "2:3"]

/** Qwen's `image_size` names for our ratios. */
export const QWEN_SIZES: Readonly<Record<string, string>> = {
  "1:1": "square_hd",
  "4:3": "landscape_4_3",
  "3:4": "portrait_4_3",
  "16:9": "landscape_16_9",
  "9:16": "portrait_16_9"
}

const spec = (s: Omit<ModelSpec, "images" | "fixed" | "nsfwChecker"> & Partial<ModelSpec>): ModelSpec => ({
  images: undefined,
  fixed: {},
  nsfwChecker: false,
  ...s
})

/** Every model the bot knows, text-to-image first. */
export const CATALOG: ReadonlyArray<ModelSpec> = [
  spec({
    id: "z-image",
    name: "Z-Image",
    ratioField: "aspect_ratio",
    ratios: RATIOS_5,
    maxPrompt: 1000,
    pricePerImage: 0.004,
    nsfwChecker: true
  }),
  spec({
    id: "google/nano-banana",
    name: "Nano Banana",
    ratioField: "aspect_ratio",
    ratios: RATIOS_BANANA,
    maxPrompt: 5000,
    pricePerImage: 0.02,
    fixed: { output_format: "png" }
  }),
  spec({
    id: "seedream/4.5-text-to-image",
    name: "Seedream 4.5",
    ratioField: "aspect_ratio",
    ratios: RATIOS_SEEDREAM,
    maxPrompt: 3000,
    pricePerImage: 0.0325,
    fixed: { quality: "basic" }
  }),
  spec({
    id: "flux-2/pro-text-to-image",
    name: "Flux 2 Pro",
    ratioField: "aspect_ratio",
    ratios: RATIOS_FLUX,
    maxPrompt: 5000,
    pricePerImage: 0.025,
    fixed: { resolution: "1K" }
  }),
  spec({
    id: "gpt-image/1.5-text-to-image",
    name: "GPT Image 1.5",
    ratioField: "aspect_ratio",
    ratios: ["1:1", "3:2", "2:3"],
    maxPrompt: 5000,
    pricePerImage: 0.02,
    fixed: { quality: "medium" }
  }),
  spec({
    id: "google/imagen4-fast",
    name: "Imagen 4 Fast",
    ratioField: "aspect_ratio",
    ratios: RATIOS_5,
    maxPrompt: 5000,
    pricePerImage: 0.02
  }),
  spec({
    id: "google/nano-banana-edit",
    name: "Nano Banana Edit",
    ratioField: "aspect_ratio",
    ratios: RATIOS_BANANA,
    maxPrompt: 5000,
    pricePerImage: 0.02,
    images: { field: "image_urls", many: true, max: 10 },
    fixed: { output_format: "png" }
  }),
  spec({
    id: "seedream/4.5-edit",
    name: "Seedream 4.5 Edit",
    ratioField: "aspect_ratio",
    ratios: RATIOS_SEEDREAM,
    maxPrompt: 3000,
    pricePerImage: 0.0325,
    images: { field: "image_urls", many: true, max: 14 },
    fixed: { quality: "basic" }
  }),
  spec({
    id: "flux-2/pro-image-to-image",
    name: "Flux 2 Pro Edit",
    ratioField: "aspect_ratio",
    ratios: RATIOS_FLUX,
    maxPrompt: 5000,
    pricePerImage: 0.025,
    images: { field: "input_urls", many: true, max: 8 },
    fixed: { resolution: "1K" }
  }),
  spec({
    id: "qwen/image-edit",
    name: "Qwen Image Edit",
    ratioField: "image_size",
    ratios: RATIOS_5,
    maxPrompt: 2000,
    pricePerImage: 0.03,
    images: { field: "image_url", many: false, max: 1 }
  })
]

/** The catalog entry of `id`, if the bot knows that model. */
export const findModel = (id: string): ModelSpec | undefined => CATALOG.find((model) => model.id === id)

/** The catalog entry of `id`; an id that passed startup is always known (`checkModelIds`). */
export const modelOf = (id: string): ModelSpec => findModel(id) ?? CATALOG[0]!

/**
 * The first id of `ids` the catalog does not know, or of the wrong kind
 * (`edits`: must edit; else must draw from text).
 */
export const unknownModelId = (ids: ReadonlyArray<string>, edits: boolean): string | undefined =>
  ids.find((id) => {
    const model = findModel(id)
    return model === undefined || (model.images !== undefined) !== edits
  })

// ---------------------------------------------------------------------------
// Requests

/** What a createTask asks a model for, before it becomes the model's `input`. */
export interface ModelRequest {
  readonly prompt: string
  /** `undefined` or `auto`: the model decides (an edit keeps the picture's shape). */
  readonly aspectRatio: AspectRatio | undefined
  /** The pictures to edit (URLs Kie can fetch); empty for text-to-image. */
  readonly imageUrls: ReadonlyArray<string>
  readonly nsfwChecker: boolean
}

const HttpUrl = Schema.String.check(Schema.isPattern(/^https?:\/\/[^\s]+$/i), Schema.isMaxLength(4096))
const characters = (s: string) => [...s].length

/** The ratio values `model` takes on the wire (Qwen names sizes, the others send the ratio). */
export const wireRatios = (model: ModelSpec): ReadonlyArray<string> =>
  model.ratioField === "image_size"
    ? model.ratios.map((ratio) => QWEN_SIZES[ratio]!)
    : model.ratios.filter((ratio) => ratio !== "auto")

/** `model`'s `input` as a Schema: exactly the fields it takes, each with Kie's rules. */
export const inputSchema = (model: ModelSpec) => {
  const fields: Record<string, Schema.Codec<unknown, unknown>> = {
    prompt: Schema.String.check(
      Schema.makeFilter((s: string) => s.trim() !== "" || "the prompt is empty"),
      Schema.makeFilter((s: string) =>
        characters(s) <= model.maxPrompt ||
        `the prompt has ${characters(s)} characters, ${model.id} accepts at most ${model.maxPrompt}`
      )
    ),
    [model.ratioField]: Schema.optionalKey(Schema.Literals(wireRatios(model))),
    ...Object.fromEntries(
      Object.entries(model.fixed).map(([key, value]) => [key, Schema.Literal(value as string) as Schema.Codec<unknown>])
    )
  }
  if (model.nsfwChecker) fields.nsfw_checker = Schema.Boolean
  const images = model.images
  if (images !== undefined) {
    fields[images.field] = images.many
      ? Schema.Array(HttpUrl).check(Schema.isMinLength(1), Schema.isMaxLength(images.max))
      : HttpUrl
  }
  return Schema.Struct(fields)
}

/** The `input` object as built, before it is checked. */
const buildInput = (model: ModelSpec, request: ModelRequest): Record<string, unknown> => {
  const input: Record<string, unknown> = { prompt: request.prompt, ...model.fixed }
  const ratio = request.aspectRatio
  if (ratio !== undefined && ratio !== "auto") {
    input[model.ratioField] = model.ratioField === "image_size" ? (QWEN_SIZES[ratio] ?? ratio) : ratio
  }
  if (model.nsfwChecker) input.nsfw_checker = request.nsfwChecker
  const images = model.images
  if (images !== undefined) input[images.field] = images.many ? request.imageUrls : request.imageUrls[0]
  else if (request.imageUrls.length > 0) input.image_urls = request.imageUrls
  return input
}

const refused = (model: ModelSpec, field: string, why: string) =>
  new KieValidationFailed({
    operation: "createTask",
    message: `createTask not sent: model ${model.id} refuses input.${field}: ${why}`
  })

/**
 * Checks an `input` object against `model`'s Schema: every field it needs, no
 * field it does not know. The problem names the field.
 */
export const checkInput = (
  model: ModelSpec,
  input: Readonly<Record<string, unknown>>
): Result.Result<Readonly<Record<string, unknown>>, KieValidationFailed> => {
  const decoded = Schema.decodeUnknownResult(inputSchema(model))(input, { onExcessProperty: "error" })
  if (Result.isSuccess(decoded)) return Result.succeed(input)
  const message = decoded.failure.message
  const field = /at \["([^"]+)"\]/.exec(message)?.[1] ?? "?"
  const why = message.split("\n")[0]!.slice(0, 200)
  return Result.fail(refused(model, field, why))
}

/** The createTask `input` for `request` on `model`, or why the model would refuse it. */
export const modelInput = (
  model: ModelSpec,
  request: ModelRequest
): Effect.Effect<Readonly<Record<string, unknown>>, KieValidationFailed> =>
  Effect.fromResult(checkInput(model, buildInput(model, request)))

/**
 * Startup check of MODELS and EDIT_MODEL against the catalog: an id the bot
 * does not know (or a text model as EDIT_MODEL, an editor in MODELS) stops
 * startup with one line naming it. Run by `Launcher.ts` after the
 * configuration is read (`platform/AppConfig.ts` cannot see the catalog).
 */
export const checkConfiguredModels = (
  config: Pick<AppConfigShape, "models" | "editModel">
): Effect.Effect<void, ConfigInvalid> => {
  const known = (edits: boolean) =>
    CATALOG.filter((model) => (model.images !== undefined) === edits).map((model) => model.id).join(", ")
  const text = unknownModelId(config.models, false)
  if (text !== undefined) {
    return Effect.fail(
      new ConfigInvalid({
        variable: "MODELS",
        message: `MODELS names ${text}, which is not a text-to-image model the bot knows (${known(false)})`
      })
    )
  }
  const edit = Option.getOrUndefined(config.editModel)
  if (edit !== undefined && unknownModelId([edit], true) !== undefined) {
    return Effect.fail(
      new ConfigInvalid({
        variable: "EDIT_MODEL",
        message: `EDIT_MODEL names ${edit}, which is not an editing model the bot knows (${known(true)})`
      })
    )
  }
  return Effect.void
}
