/**
 * The chat page's API on FakeTelegram: what a browser needs to be "the
 * users" of a bot talking to the fake Bot API. The fake keeps the bot's
 * messages; this keeps what the users sent, the pictures both sides sent,
 * edits, callback answers and typing, and turns page actions into real
 * updates (`pushUpdate`), so the bot sees exactly what Telegram would send.
 *
 * HTTP, on the fake's own port (JSON in and out):
 * - `GET  /chat/state?since=<version>`: the conversations; held up to 25 s
 *   until something changes after `since` (long polling).
 * - `POST /chat/message` `{chatId, userId, name, languageCode, text, replyTo?}`
 * - `POST /chat/photo`   `{chatId, userId, name, languageCode, photoBase64, caption?, replyTo?}`
 * - `POST /chat/press`   `{chatId, userId, name, languageCode, messageId, data}`
 * - `GET  /chat/media/<key>`: the bytes of a picture or document.
 */
import type * as http from "node:http"

/** What the page shows of one message. */
export interface PageMessage {
  readonly id: number
  readonly from: "bot" | "user"
  readonly userId?: number
  readonly name?: string
  readonly kind: "text" | "photo" | "document"
  readonly text?: string
  readonly caption?: string
  readonly buttons?: ReadonlyArray<ReadonlyArray<{ readonly text: string; readonly data: string }>>
  readonly forceReply?: boolean
  readonly media?: string
  readonly fileName?: string
  readonly edits: number
  readonly replyTo?: number
}

export interface PageState {
  readonly version: number
  readonly chats: ReadonlyArray<{ readonly chatId: number; readonly messages: ReadonlyArray<PageMessage> }>
  readonly toasts: ReadonlyArray<{ readonly seq: number; readonly chatId: number; readonly text: string }>
  readonly typing: ReadonlyArray<number>
}

/** A user of the page, as the update's `from`. */
export interface PageUser {
  readonly chatId: number
  readonly userId: number
  readonly name: string
  readonly languageCode: string
}

/** What the chat page needs from the fake it lives on. */
export interface ChatPageHost {
  readonly nextMessageId: (chatId: number) => number
  readonly botMessages: (chatId: number) => ReadonlyArray<{
    readonly messageId: number
    readonly kind: "text" | "photo" | "document"
    readonly text: string | undefined
    readonly caption: string | undefined
    readonly replyMarkup: unknown
    readonly replyTo: number | undefined
  }>
  readonly chatIds: () => ReadonlyArray<number>
  readonly pushUpdate: (update: Record<string, unknown>) => number
  readonly pressButton: (press: {
    chatId: number
    userId: number
    messageId: number
    data: string
    id: string
    languageCode: string
  }) => number
  readonly addFile: (bytes: Uint8Array) => string
  /** The message a reply refers to, as Telegram puts it in `reply_to_message`. */
  readonly repliedMessage: (chatId: number, messageId: number) => Record<string, unknown> | undefined
}

interface UserEntry {
  readonly chatId: number
  readonly message: PageMessage
}

const chatOf = (chatId: number, name: string) =>
  chatId > 0
    ? { id: chatId, type: "private", first_name: name }
    : { id: chatId, type: "supergroup", title: "Sandbox group" }

const HOLD_MS = 25_000

/** The page's state and actions; the fake calls `noteCall` for every Bot API call it answered. */
export const makeChatPage = (host: ChatPageHost) => {
  const users = new Map<number, Array<UserEntry>>()
  const media = new Map<string, { readonly bytes: Uint8Array; readonly type: string; readonly name: string }>()
  const mediaOfBot = new Map<string, string>()
  const edits = new Map<string, number>()
  const toasts: Array<{ seq: number; chatId: number; text: string }> = []
  const callbackChats = new Map<string, number>()
  const typing = new Map<number, number>()
  let version = 0
  let nextCallback = 1
  const waiters = new Set<() => void>()
  const changed = () => {
    version++
    for (const wake of Array.from(waiters)) wake()
    waiters.clear()
  }

  const from = (user: PageUser) => ({
    id: user.userId,
    is_bot: false,
    first_name: user.name,
    language_code: user.languageCode
  })
  const record = (user: PageUser, message: Omit<PageMessage, "from" | "edits" | "userId" | "name">) => {
    const list = users.get(user.chatId) ?? []
    list.push({
      chatId: user.chatId,
      message: { ...message, from: "user", userId: user.userId, name: user.name, edits: 0 }
    })
    users.set(user.chatId, list)
  }
  const base = (user: PageUser, messageId: number, replyTo: number | undefined) => {
    const replied = replyTo === undefined ? undefined : host.repliedMessage(user.chatId, replyTo)
    return {
      message_id: messageId,
      from: from(user),
      chat: chatOf(user.chatId, user.name),
      date: Math.floor(Date.now() / 1000),
      ...(replied === undefined ? {} : { reply_to_message: replied })
    }
  }

  /** A user sends text; commands get their `bot_command` entity. */
  const sendText = (user: PageUser, text: string, replyTo?: number) => {
    const messageId = host.nextMessageId(user.chatId)
    const command = /^\/\w+(@\w+)?/.exec(text)
    record(user, { id: messageId, kind: "text", text, ...(replyTo === undefined ? {} : { replyTo }) })
    const updateId = host.pushUpdate({
      message: {
        ...base(user, messageId, replyTo),
        text,
        ...(command === null ? {} : { entities: [{ type: "bot_command", offset: 0, length: command[0].length }] })
      }
    })
    changed()
    return { updateId, messageId }
  }

  /** A user sends a picture (its largest size is `bytes`), with an optional caption. */
  const sendPhoto = (user: PageUser, bytes: Uint8Array, caption?: string, replyTo?: number) => {
    const messageId = host.nextMessageId(user.chatId)
    const fileId = host.addFile(bytes)
    const key = `u${user.chatId}-${messageId}`
    media.set(key, { bytes, type: "image/png", name: "photo.png" })
    record(user, {
      id: messageId,
      kind: "photo",
      media: `/chat/media/${key}`,
      ...(caption === undefined ? {} : { caption }),
      ...(replyTo === undefined ? {} : { replyTo })
    })
    const updateId = host.pushUpdate({
      message: {
        ...base(user, messageId, replyTo),
        photo: [
          { file_id: `${fileId}-small`, file_unique_id: `s${fileId}`, width: 90, height: 90, file_size: 1000 },
          { file_id: fileId, file_unique_id: `u${fileId}`, width: 1280, height: 1280, file_size: bytes.length }
        ],
        ...(caption === undefined ? {} : { caption })
      }
    })
    changed()
    return { updateId, messageId }
  }

  /** A user presses an inline button on the bot's message. */
  const press = (user: PageUser, messageId: number, data: string) => {
    const id = `page-cbq-${nextCallback++}`
    callbackChats.set(id, user.chatId)
    const updateId = host.pressButton({
      chatId: user.chatId,
      userId: user.userId,
      messageId,
      data,
      id,
      languageCode: user.languageCode
    })
    return { updateId }
  }

  /** Called by the fake after it answered a Bot API call successfully. */
  const noteCall = (
    method: string,
    params: Readonly<Record<string, unknown>>,
    result: unknown,
    file: { readonly bytes: Uint8Array; readonly type: string; readonly name: string } | undefined
  ) => {
    const chatId = Number(params.chat_id)
    if (method === "answerCallbackQuery") {
      const chat = callbackChats.get(String(params.callback_query_id))
      if (chat !== undefined && typeof params.text === "string") {
        toasts.push({ seq: toasts.length + 1, chatId: chat, text: params.text })
      }
    } else if (method === "editMessageText" || method === "editMessageReplyMarkup" || method === "editMessageCaption") {
      const key = `${chatId}/${String(params.message_id)}`
      edits.set(key, (edits.get(key) ?? 0) + 1)
    } else if (method === "sendChatAction") {
      typing.set(chatId, Date.now())
    } else if (method === "sendPhoto" || method === "sendDocument") {
      const messageId = (result as { message_id?: number } | undefined)?.message_id
      const key = `b${chatId}-${String(messageId)}`
      if (file !== undefined) {
        media.set(key, file)
        mediaOfBot.set(`${chatId}/${String(messageId)}`, `/chat/media/${key}`)
      } else {
        const value = params[method === "sendPhoto" ? "photo" : "document"]
        if (typeof value === "string") mediaOfBot.set(`${chatId}/${String(messageId)}`, value)
      }
    } else if (method !== "sendMessage" && method !== "deleteMessage") {
      return
    }
    if (method === "sendMessage" || method === "sendPhoto" || method === "sendDocument") typing.delete(chatId)
    changed()
  }

  const buttonsOf = (markup: unknown) => {
    const rows = (markup as { inline_keyboard?: Array<Array<{ text: string; callback_data?: string }>> } | undefined)
      ?.inline_keyboard
    return rows?.map((row) => row.map((b) => ({ text: b.text, data: b.callback_data ?? "" })))
  }

  const conversation = (chatId: number): ReadonlyArray<PageMessage> => {
    const bot = host.botMessages(chatId).map((m): PageMessage => {
      const key = `${chatId}/${m.messageId}`
      const buttons = buttonsOf(m.replyMarkup)
      const file = mediaOfBot.get(key)
      const name = file === undefined ? undefined : media.get(file.slice("/chat/media/".length))?.name
      return {
        id: m.messageId,
        from: "bot",
        kind: m.kind,
        edits: edits.get(key) ?? 0,
        ...(m.text === undefined ? {} : { text: m.text }),
        ...(m.caption === undefined ? {} : { caption: m.caption }),
        ...(buttons === undefined ? {} : { buttons }),
        ...((m.replyMarkup as { force_reply?: boolean } | undefined)?.force_reply === true ? { forceReply: true } : {}),
        ...(file === undefined ? {} : { media: file }),
        ...(name === undefined ? {} : { fileName: name }),
        ...(m.replyTo === undefined ? {} : { replyTo: m.replyTo })
      }
    })
    const mine = (users.get(chatId) ?? []).map((u) => u.message)
    return [...bot, ...mine].sort((a, b) => a.id - b.id)
  }

  const state = (): PageState => {
    const ids = new Set([...host.chatIds(), ...users.keys()])
    const now = Date.now()
    return {
      version,
      chats: [...ids].map((chatId) => ({ chatId, messages: conversation(chatId) })),
      toasts: toasts.slice(-20),
      typing: [...typing].filter(([, at]) => now - at < 5_000).map(([chatId]) => chatId)
    }
  }

  const awaitChange = (since: number, timeoutMs = HOLD_MS) =>
    new Promise<void>((resolve) => {
      if (version > since) return resolve()
      const timer = setTimeout(() => {
        waiters.delete(wake)
        resolve()
      }, timeoutMs)
      const wake = () => {
        clearTimeout(timer)
        resolve()
      }
      waiters.add(wake)
    })

  const json = (res: http.ServerResponse, status: number, body: unknown) => {
    const text = JSON.stringify(body)
    res.writeHead(status, { "content-type": "application/json", "cache-control": "no-store" })
    res.end(text)
  }

  const readJson = async (req: http.IncomingMessage): Promise<Record<string, any>> => {
    const chunks: Array<Buffer> = []
    for await (const chunk of req) chunks.push(chunk as Buffer)
    return JSON.parse(Buffer.concat(chunks).toString("utf8") || "{}")
  }

  const userOf = (body: Record<string, any>): PageUser => ({
    chatId: Number(body.chatId),
    userId: Number(body.userId),
    name: typeof body.name === "string" ? body.name : `User ${body.userId}`,
    languageCode: typeof body.languageCode === "string" ? body.languageCode : "ru"
  })
  const replyOf = (body: Record<string, any>) => (typeof body.replyTo === "number" ? body.replyTo : undefined)

  /** Serves `/chat/...`; returns false for other paths. */
  const serve = async (req: http.IncomingMessage, res: http.ServerResponse, url: URL): Promise<boolean> => {
    if (!url.pathname.startsWith("/chat/")) return false
    const route = `${req.method} ${url.pathname}`
    try {
      if (route === "GET /chat/state") {
        await awaitChange(Number(url.searchParams.get("since") ?? -1))
        json(res, 200, state())
      } else if (route === "POST /chat/message") {
        const body = await readJson(req)
        json(res, 200, sendText(userOf(body), String(body.text ?? ""), replyOf(body)))
      } else if (route === "POST /chat/photo") {
        const body = await readJson(req)
        const caption = typeof body.caption === "string" && body.caption !== "" ? body.caption : undefined
        json(res, 200, sendPhoto(userOf(body), Buffer.from(String(body.photoBase64), "base64"), caption, replyOf(body)))
      } else if (route === "POST /chat/press") {
        const body = await readJson(req)
        json(res, 200, press(userOf(body), Number(body.messageId), String(body.data)))
      } else if (req.method === "GET" && url.pathname.startsWith("/chat/media/")) {
        const file = media.get(decodeURIComponent(url.pathname.slice("/chat/media/".length)))
        if (file === undefined) json(res, 404, { error: "no such file" })
        else {
          res.writeHead(200, { "content-type": file.type, "content-disposition": `inline; filename="${file.name}"` })
          res.end(file.bytes)
        }
      } else json(res, 404, { error: "unknown chat page route" })
    } catch (error) {
      json(res, 400, { error: String(error) })
    }
    return true
  }

  return { sendText, sendPhoto, press, noteCall, state, awaitChange, serve, version: () => version }
}

/** The chat page's API as the fake exposes it. */
export type ChatPage = ReturnType<typeof makeChatPage>
