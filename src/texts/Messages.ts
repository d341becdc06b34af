/**
 * Every text the bot shows, in Russian and English, and the inline keyboards
 * with their callback data. The contract texts (`docs/contract.md`) are here
 * verbatim; nothing else in the code spells out user-facing words.
 *
 * English is used when the user's Telegram `language_code` starts with "en",
 * Russian otherwise.
 */
import type { InlineKeyboardMarkup } from "grammy/types"

export type InlineKeyboard = InlineKeyboardMarkup

export type Lang = "ru" | "en"

export const langOf = (languageCode: string | undefined | null): Lang =>
  languageCode !== undefined && languageCode !== null && languageCode.toLowerCase().startsWith("en") ? "en" : "ru"

/** The aspect ratios offered to users, which are the ones Z-Image accepts (`input.aspect_ratio`). */
export const ASPECT_RATIOS = ["1:1", "16:9", "9:16", "4:3", "3:4"] as const
/**
 * Every ratio some model of the catalog (`kie/ModelCatalog.ts`) offers, Z-Image's first; `auto` (the
 * model keeps the shape of the picture it edits) is never a button.
 */
export const KNOWN_RATIOS = [...ASPECT_RATIOS, "3:2", "2:3", "5:4", "4:5", "21:9", "auto"] as const
export type AspectRatio = typeof KNOWN_RATIOS[number]
export const isAspectRatio = (s: string): s is AspectRatio => (KNOWN_RATIOS as ReadonlyArray<string>).includes(s)

export const PROMPT_MAX_LENGTH = 1000

// ---------------------------------------------------------------------------
// Callback data. Telegram allows 1–64 bytes; ids are short decimal numbers.

export const CallbackData = {
  start: "zimage:start",
  ratio: (ratio: AspectRatio) => `zimage:ratio:${ratio}`,
  /** Another picture from the same prompt and ratio as generation `id`. */
  again: (id: string) => `zimage:again:${id}`,
  /** Retry the failed generation `id` with the same prompt and ratio. */
  retry: (id: string) => `zimage:retry:${id}`,
  /** Choose the Kie model `id` (`kie/ModelCatalog.ts`; at most 51 characters, so within 64 bytes). */
  model: (id: string) => `zimage:model:${id}`
} as const

export type ParsedCallback =
  | { readonly _tag: "Start" }
  | { readonly _tag: "Ratio"; readonly ratio: AspectRatio }
  | { readonly _tag: "Again"; readonly generationId: string }
  | { readonly _tag: "Retry"; readonly generationId: string }
  | { readonly _tag: "Model"; readonly modelId: string }
  | { readonly _tag: "Unknown" }

/** The largest generation id: PostgreSQL's `bigint` maximum, 2^63 - 1. */
const MAX_GENERATION_ID = "9223372036854775807"

/**
 * A decimal id a `bigint` column can hold. A larger one (tampered data) would
 * make every query with it fail, and the update be retried until it is dead.
 */
const fitsBigint = (digits: string): boolean =>
  digits.length < MAX_GENERATION_ID.length ||
  (digits.length === MAX_GENERATION_ID.length && digits <= MAX_GENERATION_ID)

/**
 * Anything not produced by `CallbackData` (old keyboards, tampered data,
 * generation ids beyond `bigint`) is `Unknown`.
 */
export const parseCallbackData = (data: string | undefined): ParsedCallback => {
  if (data === undefined) return { _tag: "Unknown" }
  if (data === CallbackData.start) return { _tag: "Start" }
  const ratio = /^zimage:ratio:(\d{1,2}:\d{1,2})$/.exec(data)
  if (ratio !== null) return isAspectRatio(ratio[1]!) ? { _tag: "Ratio", ratio: ratio[1] } : { _tag: "Unknown" }
  const again = /^zimage:again:(\d{1,19})$/.exec(data)
  if (again !== null && fitsBigint(again[1]!)) return { _tag: "Again", generationId: again[1]! }
  const retry = /^zimage:retry:(\d{1,19})$/.exec(data)
  if (retry !== null && fitsBigint(retry[1]!)) return { _tag: "Retry", generationId: retry[1]! }
  const model = /^zimage:model:([A-Za-z0-9][A-Za-z0-9._/-]{0,50})$/.exec(data)
  if (model !== null) return { _tag: "Model", modelId: model[1]! }
  return { _tag: "Unknown" }
}

// ---------------------------------------------------------------------------
// Texts

const texts = {
  ru: {
    createButton: "🖼 Создать картинку",
    welcome: "👋 Привет! Я рисую картинки по текстовому описанию с помощью модели Z-Image.\n\n" +
      "Нажмите «🖼 Создать картинку», опишите, что хотите увидеть, и выберите формат.",
    welcomeModels: "👋 Привет! Я рисую картинки по текстовому описанию.\n\nВыберите модель:",
    modelZImage: "🖼 Z-Image",
    askPrompt: "Опишите картинку",
    chooseRatio: "Выберите формат картинки:",
    generating: "⏳ Генерирую...",
    generatingElapsed: (seconds: number) => `⏳ Генерирую... ${formatElapsed(seconds)}`,
    generatingQueued: (position: number) => `⏳ Генерирую... Вы в очереди: ${position}`,
    done: "✅ Готово!",
    againButton: "🔁 Ещё вариант",
    newButton: "🖼 Новая картинка",
    failed: (reason: string) => `❌ Не получилось создать картинку: ${reason}`,
    retryButton: "🔄 Попробовать снова",
    promptEmpty: "Описание пустое. Напишите словами, что нарисовать.",
    promptTooLong: (length: number) =>
      `Слишком длинное описание: ${length} символов. Сократите его до ${PROMPT_MAX_LENGTH}.`,
    notText: "Я понимаю только текст. Опишите картинку словами.",
    useRatioButtons: "Выберите формат кнопкой под сообщением выше или пришлите новое описание.",
    expired: "Эта кнопка устарела",
    notYourButton: "Эта кнопка не для вас",
    busy: "Подождите: предыдущая картинка ещё генерируется.",
    dailyLimit: (limit: number) => `На сегодня лимит исчерпан: ${limit} картинок в день. Возвращайтесь завтра!`,
    globalLimit: "Сегодня бот уже нарисовал столько картинок, сколько может за день. " +
      "Возвращайтесь завтра: лимит обновится в 00:00 UTC.",
    privateBot: "Это частный бот: он отвечает только своим пользователям.",
    tooManyMessages: "⏳ Слишком много сообщений. Подождите немного, потом продолжим.",
    cancelled: "Отменено. Чтобы начать заново, нажмите /start",
    help: "Я рисую картинки по текстовому описанию (модель Z-Image).\n\n" +
      "1. Нажмите /start и «🖼 Создать картинку».\n" +
      "2. Опишите картинку (до 1000 символов).\n" +
      "3. Выберите формат: 1:1, 16:9, 9:16, 4:3 или 3:4.\n\n" +
      "Готовая картинка придёт фото, а оригинал без сжатия — файлом.\n" +
      "Пришлите фото с подписью, что изменить, — я его отредактирую; ответьте на мою картинку, чтобы доработать её.\n" +
      "/cancel — отменить ввод.",
    unknownCommand: "Не знаю такой команды. Нажмите /start или /help.",
    timedOut: "генерация заняла слишком много времени",
    unavailable: "сервис генерации временно недоступен, попробуйте позже",
    unconfirmed: "сервис генерации не подтвердил запрос, попробуйте ещё раз",
    deliveryFailed: "не удалось получить готовую картинку, попробуйте ещё раз",
    deliveryRefused: "сервис генерации вернул не картинку, попробуйте ещё раз",
    originalCaption: "Оригинал без сжатия",
    commands: { start: "Начать", help: "Помощь", cancel: "Отменить ввод" },
    kieReasons: {
      unavailable: "Сервис генерации временно недоступен. Попробуйте позже.",
      busy: "Сервис генерации сейчас перегружен или недоступен. Попробуйте через минуту.",
      maintenance: "На сервисе генерации идут технические работы. Попробуйте позже.",
      usageCap: "Лимит генераций сервиса сейчас исчерпан. Попробуйте позже.",
      rejected: "Запрос отклонён: описание не принято. Попробуйте переформулировать его.",
      generationFailed: "Не удалось сгенерировать картинку. Попробуйте ещё раз.",
      notFound: "Сервис генерации потерял эту задачу. Попробуйте ещё раз.",
      unconfirmed: "Сервис генерации не подтвердил запрос. Попробуйте через минуту.",
      badAnswer: "Сервис генерации прислал неожиданный ответ. Попробуйте позже.",
      refusedField: "Модель не приняла такой запрос (фото или параметры). Попробуйте другое фото или описание.",
      nsfw: "Запрос отклонён фильтром содержимого. Попробуйте другое фото или описание.",
      imageUnavailable: "Сервис генерации не смог получить фото: оно устарело. Пришлите его ещё раз."
    },
    kieFailedWith: (detail: string) => `Не удалось сгенерировать картинку: ${detail}`,
    welcomeModel: (name: string) =>
      `👋 Привет! Я рисую картинки по текстовому описанию с помощью модели ${name}.\n\n` +
      "Нажмите «🖼 Создать картинку», опишите, что хотите увидеть, и выберите формат.",
    modelButton: (name: string) => `🖼 ${name}`,
    modelLine: (name: string, strength: string, price: number) => `• ${name}: ${strength} (≈ $${price} за картинку)`,
    modelStrengths: {
      "z-image": "быстрая и самая дешёвая, фотореализм",
      "google/nano-banana": "точно следует описанию, хорошо пишет текст",
      "seedream/4.5-text-to-image": "яркие детальные картинки, постеры",
      "flux-2/pro-text-to-image": "фотографии и сложные сцены",
      "gpt-image/1.5-text-to-image": "понимает длинные описания, текст на картинке",
      "google/imagen4-fast": "быстрая, чистый фотореализм"
    } as Readonly<Record<string, string>>,
    promptTooLongFor: (length: number, max: number) =>
      `Слишком длинное описание: ${length} символов. Сократите его до ${max}.`,
    askEdit: "Что изменить на фото? Напишите ответом на это сообщение.",
    editOff: "Редактирование фото выключено. Опишите картинку словами.",
    fileTooBig: "Файл больше 20 МБ: такой бот скачать не может. Пришлите фото поменьше.",
    notAnImage: "Это не картинка. Пришлите фото (JPEG, PNG или WebP).",
    editReasons: {
      uploadFailed: "Не удалось передать фото сервису генерации. Попробуйте ещё раз.",
      uploadExpired: "Фото больше недоступно. Пришлите его ещё раз."
    }
  },
  en: {
    createButton: "🖼 Create a picture",
    welcome: "👋 Hi! I draw pictures from a text description with the Z-Image model.\n\n" +
      "Tap “🖼 Create a picture”, describe what you want to see and pick a format.",
    welcomeModels: "👋 Hi! I draw pictures from a text description.\n\nChoose a model:",
    modelZImage: "🖼 Z-Image",
    askPrompt: "Describe the picture",
    chooseRatio: "Choose the picture format:",
    generating: "⏳ Generating...",
    generatingElapsed: (seconds: number) => `⏳ Generating... ${formatElapsed(seconds)}`,
    generatingQueued: (position: number) => `⏳ Generating... You are number ${position} in the queue`,
    done: "✅ Done!",
    againButton: "🔁 Another variant",
    newButton: "🖼 New picture",
    failed: (reason: string) => `❌ Could not create the picture: ${reason}`,
    retryButton: "🔄 Try again",
    promptEmpty: "The description is empty. Tell me in words what to draw.",
    promptTooLong: (length: number) =>
      `The description is too long: ${length} characters. Please shorten it to ${PROMPT_MAX_LENGTH}.`,
    notText: "I only understand text. Describe the picture in words.",
    useRatioButtons: "Pick a format with the buttons above, or send a new description.",
    expired: "This button has expired",
    notYourButton: "This button is not for you",
    busy: "Please wait: your previous picture is still being generated.",
    dailyLimit: (limit: number) => `You have reached today's limit of ${limit} pictures. Come back tomorrow!`,
    globalLimit: "The bot has drawn as many pictures today as it can in a day. " +
      "Come back tomorrow: the limit resets at 00:00 UTC.",
    privateBot: "This is a private bot: it only answers its own users.",
    tooManyMessages: "⏳ Too many messages. Wait a moment, then we will go on.",
    cancelled: "Cancelled. To start again, send /start",
    help: "I draw pictures from a text description (Z-Image model).\n\n" +
      "1. Send /start and tap “🖼 Create a picture”.\n" +
      "2. Describe the picture (up to 1000 characters).\n" +
      "3. Choose a format: 1:1, 16:9, 9:16, 4:3 or 3:4.\n\n" +
      "The picture arrives as a photo, and the uncompressed original as a file.\n" +
      "Send a photo with a caption saying what to change and I will edit it; reply to my picture to refine it.\n" +
      "/cancel cancels the input.",
    unknownCommand: "I don't know that command. Send /start or /help.",
    timedOut: "the generation took too long",
    unavailable: "the image service is temporarily unavailable, please try later",
    unconfirmed: "the image service did not confirm the request, please try again",
    deliveryFailed: "could not fetch the finished picture, please try again",
    deliveryRefused: "the image service returned something that is not a picture, please try again",
    originalCaption: "Uncompressed original",
    commands: { start: "Start", help: "Help", cancel: "Cancel the input" },
    kieReasons: {
      unavailable: "The image service is temporarily unavailable. Please try again later.",
      busy: "The image service is busy or unreachable right now. Please try again in a minute.",
      maintenance: "The image service is under maintenance. Please try again later.",
      usageCap: "The generation limit of the service is used up for now. Please try again later.",
      rejected: "The request was rejected: the prompt was not accepted. Try rephrasing it.",
      generationFailed: "The image could not be generated. Please try again.",
      notFound: "The image service lost this generation. Please try again.",
      unconfirmed: "The image service did not confirm the request. Please try again in a minute.",
      badAnswer: "The image service sent an unexpected answer. Please try again later.",
      refusedField: "The model did not accept this request (the photo or a setting). Try another photo or description.",
      nsfw: "The request was refused by the content filter. Try another photo or description.",
      imageUnavailable: "The image service could not get the photo: it has expired. Please send it again."
    },
    kieFailedWith: (detail: string) => `The image could not be generated: ${detail}`,
    welcomeModel: (name: string) =>
      `👋 Hi! I draw pictures from a text description with the ${name} model.\n\n` +
      "Tap “🖼 Create a picture”, describe what you want to see and pick a format.",
    modelButton: (name: string) => `🖼 ${name}`,
    modelLine: (name: string, strength: string, price: number) => `• ${name}: ${strength} (≈ $${price} a picture)`,
    modelStrengths: {
      "z-image": "fast and the cheapest, photorealism",
      "google/nano-banana": "follows the description closely, good at lettering",
      "seedream/4.5-text-to-image": "vivid detailed pictures, posters",
      "flux-2/pro-text-to-image": "photographs and complex scenes",
      "gpt-image/1.5-text-to-image": "understands long descriptions, text in pictures",
      "google/imagen4-fast": "fast, clean photorealism"
    } as Readonly<Record<string, string>>,
    promptTooLongFor: (length: number, max: number) =>
      `The description is too long: ${length} characters. Please shorten it to ${max}.`,
    askEdit: "What should I change in the photo? Write it as a reply to this message.",
    editOff: "Photo editing is turned off. Describe the picture in words.",
    fileTooBig: "The file is over 20 MB: a bot cannot download it. Please send a smaller photo.",
    notAnImage: "This is not a picture. Please send a photo (JPEG, PNG or WebP).",
    editReasons: {
      uploadFailed: "Could not pass the photo to the image service. Please try again.",
      uploadExpired: "The photo is no longer available. Please send it again."
    }
  }
} as const

function formatElapsed(seconds: number): string {
  const s = Math.max(0, Math.floor(seconds))
  return `${Math.floor(s / 60)}:${String(s % 60).padStart(2, "0")}`
}

export const t = (lang: Lang) => texts[lang]

// ---------------------------------------------------------------------------
// Why a Kie.ai call failed

/**
 * Why a generation could not be made, as the Kie errors name it (each error
 * in `kie/KieErrors.ts` picks one); `kieReasonText` words it. `failedWith`
 * carries Kie's own failMsg for a task that ended in `fail`, already found fit
 * to show a user.
 */
export type KieReason = keyof typeof texts.en.kieReasons | { readonly failedWith: string }

/** The words for a `KieReason`: a whole sentence, shown after `failed`'s prefix. */
export const kieReasonText = (reason: KieReason, lang: Lang): string =>
  typeof reason === "string" ? texts[lang].kieReasons[reason] : texts[lang].kieFailedWith(reason.failedWith)

// ---------------------------------------------------------------------------
// Keyboards

const keyboard = (
  rows: ReadonlyArray<ReadonlyArray<{ text: string; callback_data: string }>>
): InlineKeyboardMarkup => ({
  inline_keyboard: rows.map((row) => [...row])
})

/** A model as the welcome shows it. */
export interface ModelButton {
  readonly id: string
  readonly name: string
}

/**
 * The welcome's buttons: "🖼 Создать картинку" with one model; with a choice,
 * one button per model (`zimage:model:<id>`), Z-Image alone by default.
 */
export const welcomeKeyboard = (
  lang: Lang,
  singleModel: boolean,
  models: ReadonlyArray<ModelButton> = [{ id: "z-image", name: "Z-Image" }]
): InlineKeyboardMarkup =>
  singleModel
    ? keyboard([[{ text: t(lang).createButton, callback_data: CallbackData.start }]])
    : keyboard(
      models.map((model) => [{ text: t(lang).modelButton(model.name), callback_data: CallbackData.model(model.id) }])
    )

/** Ratio buttons, three to a row, in the order given (a model's own ratios). */
export const ratioKeyboardFor = (ratios: ReadonlyArray<AspectRatio>): InlineKeyboardMarkup =>
  keyboard(
    Array.from(
      { length: Math.ceil(ratios.length / 3) },
      (_, row) =>
        ratios.slice(row * 3, row * 3 + 3).map((ratio) => ({ text: ratio, callback_data: CallbackData.ratio(ratio) }))
    )
  )

export const ratioKeyboard: InlineKeyboardMarkup = ratioKeyboardFor(ASPECT_RATIOS)

export const doneKeyboard = (lang: Lang, generationId: string): InlineKeyboardMarkup =>
  keyboard([[
    { text: t(lang).againButton, callback_data: CallbackData.again(generationId) },
    { text: t(lang).newButton, callback_data: CallbackData.start }
  ]])

export const retryKeyboard = (lang: Lang, generationId: string): InlineKeyboardMarkup =>
  keyboard([[{ text: t(lang).retryButton, callback_data: CallbackData.retry(generationId) }]])

/** The commands registered with setMyCommands, per language. */
export const botCommands = (lang: Lang) => [
  { command: "start", description: t(lang).commands.start },
  { command: "help", description: t(lang).commands.help },
  { command: "cancel", description: t(lang).commands.cancel }
]
