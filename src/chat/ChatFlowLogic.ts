/**
 * The Z-Image conversation as a pure function: (state, input) → (state, actions).
 *
 * Keeping the decisions free of I/O makes them easy to test exhaustively (a
 * property test feeds random inputs and checks the state stays valid), and
 * leaves `ChatFlow.ts` with only the job of carrying the actions out.
 */
import { modelOf } from "../kie/ModelCatalog.ts"
import {
  type AspectRatio,
  type InlineKeyboard,
  type Lang,
  type ParsedCallback,
  PROMPT_MAX_LENGTH,
  ratioKeyboardFor,
  t,
  welcomeKeyboard
} from "../texts/Messages.ts"

/** Where a chat is in the conversation (stored in `chat_sessions`). */
export type ChatState =
  | { readonly _tag: "Idle" }
  | { readonly _tag: "WaitingPrompt" }
  | {
    readonly _tag: "WaitingAspectRatio"
    readonly prompt: string
    /** The message carrying the ratio keyboard; callbacks from other messages are stale. */
    readonly keyboardMessageId: number | null
  }
  /** A photo came without a caption: the next text says what to change (Telegram file ids, largest size). */
  | {
    readonly _tag: "WaitingEdit"
    readonly fileIds: ReadonlyArray<string>
    /** The album the photos came in: its later photos join them. */
    readonly mediaGroupId: string | null
  }

/** Nothing asked for: the state of a new chat and after /start, /cancel or a recorded generation. */
export const Idle: ChatState = { _tag: "Idle" }

/** What the user did, as the flow sees it. */
export type ChatInput =
  | { readonly _tag: "Command"; readonly command: string }
  | {
    readonly _tag: "Text"
    readonly text: string
    /** The text replies to a picture the bot delivered (this message of the bot's): edit it. */
    readonly editsMessageId?: number | undefined
    /** That picture's Telegram files (largest size), in case its stored result is gone. */
    readonly repliedFileIds?: ReadonlyArray<string> | undefined
  }
  /** A sticker, voice message, non-image document, … */
  | { readonly _tag: "NonText" }
  /** A photo, or an image sent as a file: the largest size's file id, and its caption. */
  | {
    readonly _tag: "Photo"
    readonly fileIds: ReadonlyArray<string>
    readonly caption: string | undefined
    /** Over the 20 MB a bot may download (Telegram tells the size up front). */
    readonly tooBig: boolean
    /** Set for each photo of an album (photos sent together). */
    readonly mediaGroupId?: string | undefined
  }
  | {
    readonly _tag: "Callback"
    readonly queryId: string
    readonly data: ParsedCallback
    /** The message the pressed button belongs to, when Telegram tells us. */
    readonly messageId: number | undefined
    /** Who pressed the button. */
    readonly pressedBy?: number | undefined
    /**
     * Whom the button's message was shown to (in groups the bot's messages
     * answer a user's message); `undefined` when nobody in particular.
     */
    readonly shownTo?: number | undefined
  }

/** What the flow does in answer, in order; `ChatFlow.ts` carries it out. */
export type ChatAction =
  | { readonly _tag: "AnswerCallback"; readonly queryId: string; readonly text?: string | undefined }
  | {
    readonly _tag: "Send"
    readonly text: string
    readonly keyboard?: InlineKeyboard | undefined
    /** Remember the sent message as the ratio keyboard of the new state. */
    readonly isRatioKeyboard?: boolean | undefined
    /**
     * The message asks the user to write something: in a group it must be
     * answered as a reply (`force_reply`), or privacy mode hides the answer.
     */
    readonly asksForReply?: boolean | undefined
  }
  /** Take the keyboard off a message so it cannot be pressed twice. */
  | { readonly _tag: "RemoveKeyboard"; readonly messageId: number }
  /**
   * Start a generation. Limits are checked by whoever carries this out: when
   * one is hit, the user is told and the chat stays where it was, keyboard
   * and all, so they can press again later.
   */
  | {
    readonly _tag: "StartGeneration"
    readonly prompt: string
    readonly aspectRatio: AspectRatio
    /** The Kie model id chosen (the first of MODELS with one model). */
    readonly model: string
    /** The ratio keyboard to take away once the generation is recorded. */
    readonly keyboardMessageId: number | undefined
  }
  /** Start an edit of the user's photos with `EDIT_MODEL` (limits checked like any generation). */
  | {
    readonly _tag: "StartEdit"
    readonly prompt: string
    readonly fileIds: ReadonlyArray<string>
    /** The album they came in: its later photos join the edit until its upload. */
    readonly mediaGroupId?: string | undefined
  }
  /**
   * A later photo of an album: it joins the edit the album started; when
   * there is none, the bot asks what to change (and keeps the photo).
   */
  | { readonly _tag: "JoinAlbum"; readonly mediaGroupId: string; readonly fileId: string }
  /**
   * Edit the picture the bot delivered as message `messageId` (its stored
   * result; `fileIds`, Telegram's copy, when the bot no longer knows it).
   */
  | {
    readonly _tag: "EditDelivered"
    readonly prompt: string
    readonly messageId: number
    readonly fileIds: ReadonlyArray<string>
  }
  /** Start a generation from an earlier one (its prompt and ratio), if it is ours and finished. */
  | {
    readonly _tag: "RepeatGeneration"
    readonly generationId: string
    readonly mode: "again" | "retry"
    readonly queryId: string
  }

/** The state reached and the actions that get there. */
export interface Transition {
  readonly state: ChatState
  readonly actions: ReadonlyArray<ChatAction>
  /** A model the user just chose: remembered for them (`chat_sessions.model`). */
  readonly model?: string | undefined
}

/** A model as the conversation needs it: its buttons, ratios, prompt limit and price. */
export interface ModelOption {
  readonly id: string
  readonly name: string
  readonly ratios: ReadonlyArray<AspectRatio>
  readonly maxPrompt: number
  readonly pricePerImage: number
}

/** The conversation's view of a catalog model (`kie/ModelCatalog.ts`). */
export const modelOption = (id: string): ModelOption => {
  const model = modelOf(id)
  return {
    id: model.id,
    name: model.name,
    ratios: model.ratios,
    maxPrompt: model.maxPrompt,
    pricePerImage: model.pricePerImage
  }
}

const ZIMAGE = modelOption("z-image")

/** What the flow needs to know beyond state and input. */
export interface FlowSettings {
  readonly lang: Lang
  readonly singleModelOnly: boolean
  /** The models offered (MODELS), in button order; Z-Image alone when left out. */
  readonly models?: ReadonlyArray<ModelOption> | undefined
  /** The user's last choice, if any (ignored when it is no longer offered, or with one model). */
  readonly chosenModel?: string | null | undefined
  /** Whether photos are edited (EDIT_MODEL set); off when left out. */
  readonly editing?: boolean | undefined
  /** The edit model's prompt limit. */
  readonly editMaxPrompt?: number | undefined
  /** The most pictures the edit model takes (an album's extra photos are left out). */
  readonly editMaxImages?: number | undefined
}

/** The model the user draws with now: their choice while it is offered, else the first one. */
export const currentModel = (settings: FlowSettings): ModelOption => {
  const models = settings.models ?? [ZIMAGE]
  const chosen = settings.singleModelOnly ? undefined : models.find((m) => m.id === settings.chosenModel)
  return chosen ?? models[0] ?? ZIMAGE
}

const stay = (state: ChatState, ...actions: Array<ChatAction>): Transition => ({ state, actions })
const send = (text: string, keyboard?: InlineKeyboard): ChatAction => ({ _tag: "Send", text, keyboard })

/**
 * The welcome: with one model the seed's text and "🖼 Создать картинку"; with
 * a choice, each model's strength and price, then one button per model.
 */
const welcome = (settings: FlowSettings): ChatAction => {
  const text = t(settings.lang)
  const models = settings.models ?? [ZIMAGE]
  if (settings.singleModelOnly) {
    const model = currentModel(settings)
    return send(
      model.id === "z-image" ? text.welcome : text.welcomeModel(model.name),
      welcomeKeyboard(settings.lang, true)
    )
  }
  const lines = models.map((m) => text.modelLine(m.name, text.modelStrengths[m.id] ?? m.name, m.pricePerImage))
  return send([text.welcomeModels, ...lines].join("\n"), welcomeKeyboard(settings.lang, false, models))
}

/** Validates a prompt for a model allowing `max` characters; `undefined` means it is fine. */
export const promptProblem = (text: string, lang: Lang, max: number = PROMPT_MAX_LENGTH): string | undefined => {
  const trimmed = text.trim()
  if (trimmed.length === 0) return t(lang).promptEmpty
  // Count code points, as Kie does for its limits.
  const length = [...trimmed].length
  if (length > max)
    return max === PROMPT_MAX_LENGTH ? t(lang).promptTooLong(length) : t(lang).promptTooLongFor(length, max)
  return undefined
}

/** Taking away the ratio keyboard of a chat that leaves the ratio choice (none if it was never sent). */
const removeRatioKeyboard = (state: ChatState): Array<ChatAction> =>
  state._tag === "WaitingAspectRatio" && state.keyboardMessageId !== null
    ? [{ _tag: "RemoveKeyboard", messageId: state.keyboardMessageId }]
    : []

const acceptPrompt = (text: string, settings: FlowSettings): Transition => ({
  state: { _tag: "WaitingAspectRatio", prompt: text.trim(), keyboardMessageId: null },
  actions: [{
    _tag: "Send",
    text: t(settings.lang).chooseRatio,
    keyboard: ratioKeyboardFor(currentModel(settings).ratios),
    isRatioKeyboard: true
  }]
})

/** "Опишите картинку", after the start button or a model's button. */
const askPrompt = (state: ChatState, queryId: string, lang: Lang, model?: string): Transition => ({
  state: { _tag: "WaitingPrompt" },
  actions: [
    { _tag: "AnswerCallback", queryId },
    ...removeRatioKeyboard(state),
    { _tag: "Send", text: t(lang).askPrompt, asksForReply: true }
  ],
  model
})

/** A button shown to one user and pressed by another: it does nothing for them. */
const isSomeoneElses = (input: ChatInput & { _tag: "Callback" }): boolean =>
  input.shownTo !== undefined && input.pressedBy !== undefined && input.shownTo !== input.pressedBy

/** Starting an edit of `fileIds` with `prompt`, if editing is on and the prompt fits. */
const startEdit = (
  state: ChatState,
  prompt: string,
  fileIds: ReadonlyArray<string>,
  settings: FlowSettings,
  mediaGroupId?: string | null
) => {
  const problem = promptProblem(prompt, settings.lang, settings.editMaxPrompt ?? PROMPT_MAX_LENGTH)
  if (problem !== undefined) return stay(state, send(problem))
  return stay(Idle, ...removeRatioKeyboard(state), {
    _tag: "StartEdit",
    prompt: prompt.trim(),
    fileIds,
    mediaGroupId: mediaGroupId ?? undefined
  })
}

const onText = (state: ChatState, input: ChatInput & { _tag: "Text" }, settings: FlowSettings): Transition => {
  // A reply to a picture the bot delivered refines that picture, whatever the state.
  if (input.editsMessageId !== undefined && settings.editing === true) {
    const problem = promptProblem(input.text, settings.lang, settings.editMaxPrompt ?? PROMPT_MAX_LENGTH)
    if (problem !== undefined) return stay(state, send(problem))
    return stay(Idle, ...removeRatioKeyboard(state), {
      _tag: "EditDelivered",
      prompt: input.text.trim(),
      messageId: input.editsMessageId,
      fileIds: input.repliedFileIds ?? []
    })
  }
  switch (state._tag) {
    case "Idle":
      // Someone who never pressed /start (or finished) writes to us: greet them.
      return stay(state, welcome(settings))
    case "WaitingEdit":
      return startEdit(state, input.text, state.fileIds, settings, state.mediaGroupId)
    case "WaitingPrompt":
    case "WaitingAspectRatio": {
      const problem = promptProblem(input.text, settings.lang, currentModel(settings).maxPrompt)
      if (problem !== undefined) return stay(state, send(problem))
      // A new description while choosing a ratio replaces the old one.
      const accepted = acceptPrompt(input.text, settings)
      return { ...accepted, actions: [...removeRatioKeyboard(state), ...accepted.actions] }
    }
  }
}

const onNonText = (state: ChatState, settings: FlowSettings): Transition => {
  const text = t(settings.lang)
  switch (state._tag) {
    case "Idle":
      return stay(state, welcome(settings))
    case "WaitingPrompt":
      return stay(state, send(text.notText))
    case "WaitingAspectRatio":
      return stay(state, send(text.useRatioButtons))
    case "WaitingEdit":
      return stay(state, { _tag: "Send", text: text.askEdit, asksForReply: true })
  }
}

/**
 * A photo (or an image file): with a caption an edit starts at once;
 * without one the bot asks what to change and keeps the photo.
 */
const onPhoto = (state: ChatState, input: ChatInput & { _tag: "Photo" }, settings: FlowSettings): Transition => {
  const text = t(settings.lang)
  if (settings.editing !== true) return stay(state, send(text.editOff))
  if (input.tooBig) return stay(state, send(text.fileTooBig))
  const caption = input.caption?.trim() ?? ""
  const group = input.mediaGroupId
  if (caption !== "") return startEdit(state, caption, input.fileIds, settings, group)
  if (group !== undefined) {
    // A later photo of an album: kept with the photos we wait with, or joining the edit the album started.
    if (state._tag === "WaitingEdit" && state.mediaGroupId === group) {
      const fileIds = [...new Set([...state.fileIds, ...input.fileIds])].slice(0, settings.editMaxImages ?? 1)
      return stay({ ...state, fileIds })
    }
    return stay(state, { _tag: "JoinAlbum", mediaGroupId: group, fileId: input.fileIds[0]! })
  }
  return stay(
    { _tag: "WaitingEdit", fileIds: input.fileIds, mediaGroupId: null },
    ...removeRatioKeyboard(state),
    { _tag: "Send", text: text.askEdit, asksForReply: true }
  )
}

const onRatio = (
  state: ChatState,
  input: ChatInput & { _tag: "Callback" },
  ratio: AspectRatio,
  settings: FlowSettings,
  expired: Transition
): Transition => {
  if (state._tag !== "WaitingAspectRatio") return expired
  const model = currentModel(settings)
  if (!model.ratios.includes(ratio)) return expired
  if (
    state.keyboardMessageId !== null && input.messageId !== undefined &&
    input.messageId !== state.keyboardMessageId
  ) return expired
  return {
    state: Idle,
    actions: [
      { _tag: "AnswerCallback", queryId: input.queryId },
      {
        _tag: "StartGeneration",
        prompt: state.prompt,
        aspectRatio: ratio,
        model: model.id,
        keyboardMessageId: input.messageId
      }
    ]
  }
}

const onCallback = (state: ChatState, input: ChatInput & { _tag: "Callback" }, settings: FlowSettings): Transition => {
  const text = t(settings.lang)
  if (isSomeoneElses(input)) {
    return stay(state, { _tag: "AnswerCallback", queryId: input.queryId, text: text.notYourButton })
  }
  const expired = stay(state, { _tag: "AnswerCallback", queryId: input.queryId, text: text.expired })
  switch (input.data._tag) {
    case "Start":
      return askPrompt(state, input.queryId, settings.lang)
    case "Model": {
      const modelId = input.data.modelId
      const offered = !settings.singleModelOnly && (settings.models ?? [ZIMAGE]).some((m) => m.id === modelId)
      return offered ? askPrompt(state, input.queryId, settings.lang, modelId) : expired
    }
    case "Ratio":
      return onRatio(state, input, input.data.ratio, settings, expired)
    case "Again":
    case "Retry":
      // The callback is answered once the generation is found (or not).
      return stay(state, {
        _tag: "RepeatGeneration",
        generationId: input.data.generationId,
        mode: input.data._tag === "Again" ? "again" : "retry",
        queryId: input.queryId
      })
    case "Unknown":
      return expired
  }
}

/** The conversation: what `input` does to a chat in `state`. Pure. */
export const transition = (state: ChatState, input: ChatInput, settings: FlowSettings): Transition => {
  const text = t(settings.lang)
  switch (input._tag) {
    case "Command": {
      switch (input.command) {
        case "start":
          return stay(Idle, welcome(settings))
        case "help":
          return stay(state, send(text.help))
        case "cancel":
          return stay(Idle, ...removeRatioKeyboard(state), send(text.cancelled))
        default:
          return stay(state, send(text.unknownCommand))
      }
    }
    case "Text":
      return onText(state, input, settings)
    case "NonText":
      return onNonText(state, settings)
    case "Photo":
      return onPhoto(state, input, settings)
    case "Callback":
      return onCallback(state, input, settings)
  }
}

/** A state is valid when a ratio can only be awaited for a usable prompt. */
export const isValidState = (state: ChatState): boolean =>
  state._tag !== "WaitingAspectRatio" ||
  (promptProblem(state.prompt, "en") === undefined && state.prompt === state.prompt.trim())
