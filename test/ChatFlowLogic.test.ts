import { assert, describe, it } from "@effect/vitest"
import { Arbitrary, Schema } from "effect"
import {
  type ChatAction,
  type ChatInput,
  type ChatState,
  currentModel,
  Idle,
  isValidState,
  modelOption,
  transition
} from "../src/chat/ChatFlowLogic.ts"
import { ASPECT_RATIOS, CallbackData, parseCallbackData, PROMPT_MAX_LENGTH, t } from "../src/texts/Messages.ts"
import { incomingOf } from "../src/chat/ChatIncoming.ts"
import { placementOf } from "../src/chat/ChatReplies.ts"
import { Update } from "../src/telegram/TelegramUpdate.ts"
import * as FakeTelegram from "./fakes/FakeTelegram.ts"

const ru = { lang: "ru", singleModelOnly: true } as const

const callback = (data: string, messageId?: number): ChatInput => ({
  _tag: "Callback",
  queryId: "q",
  data: parseCallbackData(data),
  messageId
})

/** Carries out the keyboard bookkeeping the way ChatFlow does: the ratio keyboard gets a message id. */
const step = (state: ChatState, input: ChatInput, nextMessageId: number) => {
  const result = transition(state, input, ru)
  const keyboard = result.actions.some((a) => a._tag === "Send" && a.isRatioKeyboard === true)
  const next: ChatState = keyboard && result.state._tag === "WaitingAspectRatio"
    ? { ...result.state, keyboardMessageId: nextMessageId }
    : result.state
  return { state: next, actions: result.actions }
}

const sends = (actions: ReadonlyArray<ChatAction>) => actions.flatMap((a) => (a._tag === "Send" ? [a.text] : []))

describe("chat flow logic", () => {
  it("walks the contract flow: /start → button → prompt → ratio → generation", () => {
    let r = step(Idle, { _tag: "Command", command: "start" }, 1)
    assert.deepStrictEqual(r.state, Idle)
    const welcome = r.actions[0]!
    assert.strictEqual(welcome._tag, "Send")
    if (welcome._tag !== "Send") return
    assert.strictEqual(welcome.keyboard?.inline_keyboard[0]?.[0]?.text, "🖼 Создать картинку")
    assert.strictEqual(
      (welcome.keyboard!.inline_keyboard[0]![0] as { callback_data: string }).callback_data,
      "zimage:start"
    )

    r = step(r.state, callback("zimage:start", 1), 2)
    assert.strictEqual(r.state._tag, "WaitingPrompt")
    assert.deepStrictEqual(sends(r.actions), ["Опишите картинку"])
    assert.strictEqual(r.actions[0]!._tag, "AnswerCallback", "the callback is answered first")

    r = step(r.state, { _tag: "Text", text: "  рыжий кот в шлеме  " }, 3)
    assert.deepStrictEqual(r.state, { _tag: "WaitingAspectRatio", prompt: "рыжий кот в шлеме", keyboardMessageId: 3 })
    const ratioMessage = r.actions.find((a) => a._tag === "Send")!
    if (ratioMessage._tag !== "Send") return
    const data = ratioMessage.keyboard!.inline_keyboard.flat().map((b) =>
      (b as { callback_data: string }).callback_data
    )
    assert.deepStrictEqual(data, ASPECT_RATIOS.map((ratio) => `zimage:ratio:${ratio}`))
    assert.deepStrictEqual(
      ratioMessage.keyboard!.inline_keyboard.flat().map((b) => b.text),
      ["1:1", "16:9", "9:16", "4:3", "3:4"]
    )

    r = step(r.state, callback("zimage:ratio:16:9", 3), 4)
    assert.deepStrictEqual(r.state, Idle)
    assert.deepStrictEqual(r.actions, [
      { _tag: "AnswerCallback", queryId: "q" },
      {
        _tag: "StartGeneration",
        prompt: "рыжий кот в шлеме",
        aspectRatio: "16:9",
        model: "z-image",
        keyboardMessageId: 3
      }
    ])
  })

  it("uses English texts for English-speaking users", () => {
    const r = transition({ _tag: "WaitingPrompt" }, { _tag: "NonText" }, { lang: "en", singleModelOnly: true })
    assert.deepStrictEqual(sends(r.actions), [t("en").notText])
  })

  it("lists the models when SINGLE_MODEL_ONLY is false: strengths and prices, one zimage:model:<id> button each", () => {
    const models = ["z-image", "google/nano-banana", "gpt-image/1.5-text-to-image"].map(modelOption)
    const r = transition(Idle, { _tag: "Command", command: "start" }, { lang: "ru", singleModelOnly: false, models })
    const welcome = r.actions[0]!
    if (welcome._tag !== "Send") return assert.fail("expected a message")
    assert.isTrue(welcome.text.startsWith(t("ru").welcomeModels))
    assert.include(welcome.text, "Nano Banana: " + t("ru").modelStrengths["google/nano-banana"])
    assert.include(welcome.text, "$0.004")
    assert.deepStrictEqual(
      welcome.keyboard!.inline_keyboard.map((row) =>
        row.map((b) => [b.text, (b as { callback_data: string }).callback_data])
      ),
      [
        [["🖼 Z-Image", "zimage:model:z-image"]],
        [["🖼 Nano Banana", "zimage:model:google/nano-banana"]],
        [["🖼 GPT Image 1.5", "zimage:model:gpt-image/1.5-text-to-image"]]
      ]
    )
  })

  it("a chosen model is remembered, its ratios are the buttons, and the generation is made with it", () => {
    const models = ["z-image", "gpt-image/1.5-text-to-image"].map(modelOption)
    const settings = { lang: "ru", singleModelOnly: false, models } as const
    const chosen = transition(Idle, callback("zimage:model:gpt-image/1.5-text-to-image", 1), settings)
    assert.strictEqual(chosen.model, "gpt-image/1.5-text-to-image")
    assert.deepStrictEqual(chosen.state, { _tag: "WaitingPrompt" })
    const withChoice = { ...settings, chosenModel: chosen.model }
    const prompted = transition(chosen.state, { _tag: "Text", text: "a fox" }, withChoice)
    const ratios = prompted.actions[0]!
    if (ratios._tag !== "Send") return assert.fail("expected the ratio keyboard")
    assert.deepStrictEqual(
      ratios.keyboard!.inline_keyboard.flat().map((b) => (b as { callback_data: string }).callback_data),
      [
        "zimage:ratio:1:1",
        "zimage:ratio:3:2",
        "zimage:ratio:2:3"
      ]
    )
    // A ratio this model does not offer (an old Z-Image keyboard) is expired.
    const state = { ...prompted.state, keyboardMessageId: 5 } as ChatState
    const wrong = transition(state, callback("zimage:ratio:16:9", 5), withChoice)
    assert.deepStrictEqual(wrong.actions, [{ _tag: "AnswerCallback", queryId: "q", text: t("ru").expired }])
    const started = transition(state, callback("zimage:ratio:3:2", 5), withChoice)
    assert.deepStrictEqual(started.actions[1], {
      _tag: "StartGeneration",
      prompt: "a fox",
      aspectRatio: "3:2",
      model: "gpt-image/1.5-text-to-image",
      keyboardMessageId: 5
    })
    // "🖼 Новая картинка" later: the remembered model again.
    const again = transition(Idle, callback("zimage:start", 9), withChoice)
    assert.isUndefined(again.model)
    assert.strictEqual(currentModel(withChoice).id, "gpt-image/1.5-text-to-image")
    // A model that is not offered (or any model button with one model) is an expired button.
    for (const s of [settings, { ...settings, singleModelOnly: true }]) {
      const r = transition(Idle, callback("zimage:model:google/nano-banana", 1), s)
      assert.deepStrictEqual(r.actions, [{ _tag: "AnswerCallback", queryId: "q", text: t("ru").expired }])
    }
  })

  it("with one model that is not Z-Image, the seed's flow names it and uses its prompt limit", () => {
    const settings = { lang: "en", singleModelOnly: true, models: [modelOption("seedream/4.5-text-to-image")] } as const
    const welcome = transition(Idle, { _tag: "Command", command: "start" }, settings).actions[0]!
    if (welcome._tag !== "Send") return assert.fail("expected a message")
    assert.strictEqual(welcome.text, t("en").welcomeModel("Seedream 4.5"))
    assert.strictEqual(
      (welcome.keyboard!.inline_keyboard[0]![0]! as { callback_data: string }).callback_data,
      "zimage:start"
    )
    const long = transition({ _tag: "WaitingPrompt" }, { _tag: "Text", text: "a".repeat(2000) }, settings)
    assert.strictEqual(long.state._tag, "WaitingAspectRatio")
    const tooLong = transition({ _tag: "WaitingPrompt" }, { _tag: "Text", text: "a".repeat(3001) }, settings)
    assert.deepStrictEqual(sends(tooLong.actions), [t("en").promptTooLongFor(3001, 3000)])
  })

  it("photos: a caption starts an edit, none asks (and keeps the photo), too big or editing off is told", () => {
    const editing = { ...ru, editing: true, editMaxPrompt: 5000, editMaxImages: 3 }
    const photo = (caption?: string, extra: Partial<ChatInput & { _tag: "Photo" }> = {}): ChatInput => ({
      _tag: "Photo",
      fileIds: ["f1"],
      caption,
      tooBig: false,
      ...extra
    })
    assert.deepStrictEqual(transition(Idle, photo(" сделай ярче "), editing), {
      state: Idle,
      actions: [{ _tag: "StartEdit", prompt: "сделай ярче", fileIds: ["f1"], mediaGroupId: undefined }]
    })
    const asked = transition(Idle, photo(), editing)
    assert.deepStrictEqual(asked.state, { _tag: "WaitingEdit", fileIds: ["f1"], mediaGroupId: null })
    assert.deepStrictEqual(asked.actions, [{ _tag: "Send", text: t("ru").askEdit, asksForReply: true }])
    const answered = transition(asked.state, { _tag: "Text", text: "убери фон" }, editing)
    assert.deepStrictEqual(answered.actions, [{
      _tag: "StartEdit",
      prompt: "убери фон",
      fileIds: ["f1"],
      mediaGroupId: undefined
    }])
    assert.deepStrictEqual(sends(transition(Idle, photo("x", { tooBig: true }), editing).actions), [t("ru").fileTooBig])
    assert.deepStrictEqual(sends(transition(Idle, photo("x"), ru).actions), [t("ru").editOff])
    // An album without a caption: its later photos are kept (up to the model's limit) without a word.
    const album = transition(Idle, photo(undefined, { mediaGroupId: "g" }), editing)
    assert.deepStrictEqual(album.actions, [{ _tag: "JoinAlbum", mediaGroupId: "g", fileId: "f1" }])
    const waiting: ChatState = { _tag: "WaitingEdit", fileIds: ["f1"], mediaGroupId: "g" }
    let r = transition(waiting, photo(undefined, { mediaGroupId: "g", fileIds: ["f2"] }), editing)
    for (const id of ["f3", "f4"]) {
      r = transition(r.state, photo(undefined, { mediaGroupId: "g", fileIds: [id] }), editing)
    }
    assert.deepStrictEqual(r.state, { _tag: "WaitingEdit", fileIds: ["f1", "f2", "f3"], mediaGroupId: "g" })
    assert.lengthOf(r.actions, 0)
    // A text replying to the bot's picture edits it, whatever the state.
    const reply = transition(
      { _tag: "WaitingPrompt" },
      { _tag: "Text", text: "добавь луну", editsMessageId: 9, repliedFileIds: ["p"] },
      editing
    )
    assert.deepStrictEqual(reply.actions, [{
      _tag: "EditDelivered",
      prompt: "добавь луну",
      messageId: 9,
      fileIds: ["p"]
    }])
  })

  it("rejects empty, too long and non-text prompts, keeping the state", () => {
    const waiting: ChatState = { _tag: "WaitingPrompt" }
    for (
      const input of [
        { _tag: "Text", text: "   " },
        { _tag: "Text", text: "я".repeat(PROMPT_MAX_LENGTH + 1) },
        { _tag: "NonText" }
      ] as const
    ) {
      const r = transition(waiting, input, ru)
      assert.deepStrictEqual(r.state, waiting)
      assert.strictEqual(sends(r.actions).length, 1)
      assert.isFalse(r.actions.some((a) => a._tag === "StartGeneration"))
    }
    const exactly = transition(waiting, { _tag: "Text", text: "я".repeat(PROMPT_MAX_LENGTH) }, ru)
    assert.strictEqual(exactly.state._tag, "WaitingAspectRatio")
  })

  it("answers stale and unknown callbacks with 'expired' and changes nothing", () => {
    const waiting: ChatState = { _tag: "WaitingAspectRatio", prompt: "кот", keyboardMessageId: 10 }
    for (
      const [state, input] of [
        [Idle, callback("zimage:ratio:1:1", 10)], // keyboard from a finished flow
        [waiting, callback("zimage:ratio:1:1", 9)], // an older keyboard
        [waiting, callback("zimage:ratio:2:1", 10)], // tampered ratio
        [waiting, callback("zimage:ratio:16:9:evil", 10)],
        [waiting, callback("something-else", 10)]
      ] as const
    ) {
      const r = transition(state, input, ru)
      assert.deepStrictEqual(r.state, state)
      assert.deepStrictEqual(r.actions, [{ _tag: "AnswerCallback", queryId: "q", text: t("ru").expired }])
    }
  })

  it("generation ids beyond PostgreSQL's bigint are Unknown (no query ever sees them); 2^63 - 1 is the last one", () => {
    for (const id of ["9223372036854775808", "9999999999999999999", "99999999999999999999999"]) {
      assert.strictEqual(parseCallbackData(CallbackData.again(id))._tag, "Unknown", id)
      assert.strictEqual(parseCallbackData(CallbackData.retry(id))._tag, "Unknown", id)
    }
    assert.deepStrictEqual(parseCallbackData("zimage:again:9223372036854775807"), {
      _tag: "Again",
      generationId: "9223372036854775807"
    })
    assert.deepStrictEqual(parseCallbackData("zimage:retry:0042"), { _tag: "Retry", generationId: "0042" })
  })

  it("greets users who write without pressing /start", () => {
    const r = transition(Idle, { _tag: "Text", text: "нарисуй кота" }, ru)
    assert.strictEqual(sends(r.actions)[0], t("ru").welcome)
  })

  it("callback data stays within Telegram's 64 bytes", () => {
    const longest = [CallbackData.again("9223372036854775807"), CallbackData.retry("9223372036854775807")]
    for (const data of [...longest, CallbackData.start, ...ASPECT_RATIOS.map(CallbackData.ratio)]) {
      assert.isAtMost(Buffer.byteLength(data), 64)
      assert.notStrictEqual(parseCallbackData(data)._tag, "Unknown")
    }
  })

  const RawInput = Schema.Struct({
    kind: Schema.Literals([
      "start",
      "help",
      "cancel",
      "other-command",
      "text",
      "long",
      "blank",
      "sticker",
      "cb-start",
      "cb-ratio",
      "cb-old",
      "cb-bad",
      "cb-again"
    ]),
    text: Schema.String,
    ratio: Schema.Int.check(Schema.isBetween({ minimum: 0, maximum: 6 }))
  })

  const toInput = (raw: typeof RawInput.Type, keyboardId: number): ChatInput => {
    const ratio = ASPECT_RATIOS[raw.ratio] ?? "7:5"
    switch (raw.kind) {
      case "start":
      case "help":
      case "cancel":
      case "other-command":
        return { _tag: "Command", command: raw.kind }
      case "text":
        return { _tag: "Text", text: raw.text }
      case "long":
        return { _tag: "Text", text: "x".repeat(PROMPT_MAX_LENGTH + 1 + raw.text.length) }
      case "blank":
        return { _tag: "Text", text: " \n\t" }
      case "sticker":
        return { _tag: "NonText" }
      case "cb-start":
        return callback("zimage:start", keyboardId)
      case "cb-ratio":
        return callback(`zimage:ratio:${ratio}`, keyboardId)
      case "cb-old":
        return callback(`zimage:ratio:${ratio}`, keyboardId - 1)
      case "cb-bad":
        return callback(raw.text, keyboardId)
      case "cb-again":
        return callback("zimage:again:12", keyboardId)
    }
  }

  it.prop(
    "random update sequences never crash and always leave a valid state",
    [Arbitrary.array(Arbitrary.schema(RawInput), { maxLength: 40 })],
    ([raws]) => {
      let state: ChatState = Idle
      let messageId = 100
      for (const raw of raws) {
        messageId++
        const keyboardId = state._tag === "WaitingAspectRatio" && state.keyboardMessageId !== null
          ? state.keyboardMessageId
          : messageId
        const input = toInput(raw, keyboardId)
        const before: ChatState = state
        const r = step(state, input, messageId)
        state = r.state
        assert.isTrue(isValidState(state), JSON.stringify(state))
        if (input._tag === "Callback") {
          const answers = r.actions.filter((a) => a._tag === "AnswerCallback" || a._tag === "RepeatGeneration")
          assert.strictEqual(answers.length, 1, "every callback is answered exactly once")
          assert.strictEqual(r.actions[0], answers[0], "and first")
        }
        for (const action of r.actions) {
          if (action._tag === "StartGeneration") {
            assert.strictEqual(before._tag, "WaitingAspectRatio")
            assert.include(ASPECT_RATIOS, action.aspectRatio)
            assert.isAtLeast(action.prompt.length, 1)
            assert.isAtMost([...action.prompt].length, PROMPT_MAX_LENGTH)
          }
          if (action._tag === "Send") assert.isAtMost(action.text.length, 4096)
        }
      }
    },
    { arbitrary: { runs: 300 } }
  )
})

describe("chat flow logic in groups", () => {
  const A = 111
  const B = 222
  const pressed = (data: string, pressedBy: number, shownTo: number | undefined): ChatInput => ({
    _tag: "Callback",
    queryId: "q",
    data: parseCallbackData(data),
    messageId: 7,
    pressedBy,
    shownTo
  })
  const waiting: ChatState = { _tag: "WaitingAspectRatio", prompt: "кот", keyboardMessageId: 7 }

  it("a button shown to one user does nothing for another but say so", () => {
    for (const data of ["zimage:start", "zimage:ratio:1:1", "zimage:again:5", "zimage:retry:5", "junk"]) {
      for (const state of [Idle, { _tag: "WaitingPrompt" } as const, waiting]) {
        const r = transition(state, pressed(data, B, A), ru)
        assert.deepStrictEqual(r.state, state)
        assert.deepStrictEqual(r.actions, [{ _tag: "AnswerCallback", queryId: "q", text: t("ru").notYourButton }])
      }
    }
    const en = transition(waiting, pressed("zimage:ratio:1:1", B, A), { lang: "en", singleModelOnly: true })
    assert.deepStrictEqual(en.actions, [{ _tag: "AnswerCallback", queryId: "q", text: t("en").notYourButton }])
  })

  it("the user a button was shown to (or anyone, when it was shown to nobody in particular) can press it", () => {
    for (const shownTo of [A, undefined]) {
      const r = transition(waiting, pressed("zimage:ratio:16:9", A, shownTo), ru)
      assert.deepStrictEqual(r.actions[1], {
        _tag: "StartGeneration",
        prompt: "кот",
        aspectRatio: "16:9",
        model: "z-image",
        keyboardMessageId: 7
      })
    }
  })

  it("the prompt request is marked as asking for a reply", () => {
    const r = transition(Idle, pressed("zimage:start", A, A), ru)
    assert.deepStrictEqual(r.actions.filter((a) => a._tag === "Send"), [{
      _tag: "Send",
      text: t("ru").askPrompt,
      asksForReply: true
    }])
  })

  it("reads topic, reply target, command address and button owner from group updates", () => {
    const decode = Schema.decodeUnknownSync(Update)
    const command = incomingOf(decode({
      update_id: 1,
      ...FakeTelegram.textMessage({ chatId: -100, userId: A, text: "/start@Other_Bot go", messageId: 40, threadId: 9 })
    }))!
    assert.deepStrictEqual(command.input, { _tag: "Command", command: "start" })
    assert.strictEqual(command.addressedTo, "Other_Bot")
    assert.strictEqual(command.threadId, 9)
    assert.strictEqual(command.userMessageId, 40)
    assert.isUndefined(command.repliesTo, "the topic's creation message is no reply")

    // A reply thread in an ordinary supergroup is not a topic: sends cannot name it.
    const message = FakeTelegram.textMessage({ chatId: -100, userId: A, text: "кот", replyTo: { messageId: 3 } })
    ;(message.message as Record<string, unknown>).message_thread_id = 3
    const text = incomingOf(decode({ update_id: 2, ...message }))!
    assert.strictEqual(text.threadId, undefined)
    assert.strictEqual(text.repliesTo?.id, FakeTelegram.fakeBot.id)

    const press = FakeTelegram.callbackQuery({ chatId: -100, userId: B, data: "zimage:ratio:1:1", messageId: 5 })
    const shownOn = (press.callback_query as { message: Record<string, unknown> }).message
    shownOn.reply_to_message = { message_id: 41, date: 0, chat: shownOn.chat, from: FakeTelegram.user(A) }
    shownOn.message_thread_id = 9
    shownOn.is_topic_message = true
    const callbackIncoming = incomingOf(decode({ update_id: 3, ...press }))!
    assert.deepStrictEqual(
      callbackIncoming.input,
      {
        _tag: "Callback",
        queryId: (press.callback_query as { id: string }).id,
        data: { _tag: "Ratio", ratio: "1:1" },
        messageId: 5,
        pressedBy: B,
        shownTo: A
      }
    )
    assert.strictEqual(callbackIncoming.threadId, 9)
    assert.strictEqual(callbackIncoming.userMessageId, 41)
  })

  it("group replies quote the user's message and force their reply; private ones stay plain", () => {
    const group = { chatId: -100, chatType: "supergroup", threadId: 9, userMessageId: 40 }
    assert.deepStrictEqual(placementOf(group, true), {
      message_thread_id: 9,
      reply_parameters: { message_id: 40, allow_sending_without_reply: true },
      reply_markup: { force_reply: true, selective: true }
    })
    assert.deepStrictEqual(placementOf({ ...group, threadId: undefined }, false), {
      reply_parameters: { message_id: 40, allow_sending_without_reply: true }
    })
    const direct = { chatId: A, chatType: "private", threadId: undefined, userMessageId: 40 }
    assert.deepStrictEqual(placementOf(direct, true), {})
    assert.deepStrictEqual(placementOf(direct, false), {})
  })
})
