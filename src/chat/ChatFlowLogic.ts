/**
 * The Z-Image conversation as a pure function: (state, input) → (state, actions).
 *
 * Keeping the decisions free of I/O makes them easy to test exhaustively (a
 * property test feeds random inputs and checks the state stays valid), and
 * leaves `ChatFlow.ts` with only the job of carrying the actions out.
 */
import {
  type AspectRatio,
  type InlineKeyboard,
  type Lang,
  type ParsedCallback,
  PROMPT_MAX_LENGTH,
  ratioKeyboard,
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

/** Nothing asked for: the state of a new chat and after /start, /cancel or a recorded generation. */
export const Idle: ChatState = { _tag: "Idle" }

/** What the user did, as the flow sees it. */
export type ChatInput =
  | { readonly _tag: "Command"; readonly command: string }
  | { readonly _tag: "Text"; readonly text: string }
  /** A photo, sticker, voice message, document, … */
  | { readonly _tag: "NonText" }
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
    /** The ratio keyboard to take away once the generation is recorded. */
    readonly keyboardMessageId: number | undefined
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
}

/** What the flow needs to know beyond state and input. */
export interface FlowSettings {
  readonly lang: Lang
  readonly singleModelOnly: boolean
}

const stay = (state: ChatState, ...actions: Array<ChatAction>): Transition => ({ state, actions })
const send = (text: string, keyboard?: InlineKeyboard): ChatAction => ({ _tag: "Send", text, keyboard })

const welcome = (settings: FlowSettings): ChatAction =>
  send(
    settings.singleModelOnly ? t(settings.lang).welcome : t(settings.lang).welcomeModels,
    welcomeKeyboard(settings.lang, settings.singleModelOnly)
  )

/** Validates a prompt; `undefined` means it is fine. */
export const promptProblem = (text: string, lang: Lang): string | undefined => {
  const trimmed = text.trim()
  if (trimmed.length === 0) return t(lang).promptEmpty
  // Count code points, as Kie does for its 1000-character limit.
  const length = [...trimmed].length
  if (length > PROMPT_MAX_LENGTH) return t(lang).promptTooLong(length)
  return undefined
}

/** Taking away the ratio keyboard of a chat that leaves the ratio choice (none if it was never sent). */
const removeRatioKeyboard = (state: ChatState): Array<ChatAction> =>
  state._tag === "WaitingAspectRatio" && state.keyboardMessageId !== null
    ? [{ _tag: "RemoveKeyboard", messageId: state.keyboardMessageId }]
    : []

const acceptPrompt = (text: string, settings: FlowSettings): Transition => ({
  state: { _tag: "WaitingAspectRatio", prompt: text.trim(), keyboardMessageId: null },
  actions: [{ _tag: "Send", text: t(settings.lang).chooseRatio, keyboard: ratioKeyboard, isRatioKeyboard: true }]
})

/** A button shown to one user and pressed by another: it does nothing for them. */
const isSomeoneElses = (input: ChatInput & { _tag: "Callback" }): boolean =>
  input.shownTo !== undefined && input.pressedBy !== undefined && input.shownTo !== input.pressedBy

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
    case "Text": {
      switch (state._tag) {
        case "Idle":
          // Someone who never pressed /start (or finished) writes to us: greet them.
          return stay(state, welcome(settings))
        case "WaitingPrompt":
        case "WaitingAspectRatio": {
          const problem = promptProblem(input.text, settings.lang)
          if (problem !== undefined) return stay(state, send(problem))
          // A new description while choosing a ratio replaces the old one.
          const accepted = acceptPrompt(input.text, settings)
          return { ...accepted, actions: [...removeRatioKeyboard(state), ...accepted.actions] }
        }
      }
    }
    case "NonText": {
      switch (state._tag) {
        case "Idle":
          return stay(state, welcome(settings))
        case "WaitingPrompt":
          return stay(state, send(text.notText))
        case "WaitingAspectRatio":
          return stay(state, send(text.useRatioButtons))
      }
    }
    case "Callback": {
      if (isSomeoneElses(input)) {
        return stay(state, { _tag: "AnswerCallback", queryId: input.queryId, text: text.notYourButton })
      }
      const expired = stay(state, { _tag: "AnswerCallback", queryId: input.queryId, text: text.expired })
      switch (input.data._tag) {
        case "Start":
          return {
            state: { _tag: "WaitingPrompt" },
            actions: [
              { _tag: "AnswerCallback", queryId: input.queryId },
              ...removeRatioKeyboard(state),
              { _tag: "Send", text: text.askPrompt, asksForReply: true }
            ]
          }
        case "Ratio": {
          if (state._tag !== "WaitingAspectRatio") return expired
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
                aspectRatio: input.data.ratio,
                keyboardMessageId: input.messageId
              }
            ]
          }
        }
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
  }
}

/** A state is valid when a ratio can only be awaited for a usable prompt. */
export const isValidState = (state: ChatState): boolean =>
  state._tag !== "WaitingAspectRatio" ||
  (promptProblem(state.prompt, "en") === undefined && state.prompt === state.prompt.trim())
