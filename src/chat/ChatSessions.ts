/**
 * The `chat_sessions` table: where each chat is in the conversation, so the
 * flow survives restarts and failover. All of its SQL lives here.
 *
 * `last_update_id` makes handling idempotent: the state is written last, after
 * the update's replies were sent, together with the id of that update. An
 * update at or below it was fully handled before and is skipped.
 *
 * Keyed by (chat, user) since migration 0009: in a group every member has a
 * conversation of their own. A private chat's id is its user's id, so its
 * one row keeps its meaning.
 *
 * The table's SQL (its DDL and three statements) stays in this file rather than
 * in a `sql/` folder: the module is nothing but the table, and each statement
 * sits next to the row schema that decodes it.
 *
 * | `state`                | `prompt`  | `keyboard_message_id`         |
 * | ---------------------- | --------- | ----------------------------- |
 * | `idle`                 | null      | null                          |
 * | `waiting_prompt`       | null      | null                          |
 * | `waiting_aspect_ratio` | the text  | the ratio keyboard, if sent   |
 * | `waiting_edit`         | null      | null; `edit_file_ids` the photos |
 *
 * `model` (since migration 0011) is the user's last chosen model, kept
 * whatever the state, so "🖼 Новая картинка" draws with it again.
 */
import { Context, DateTime, Effect, Layer, Option, Schema } from "effect"
import { SqlClient } from "effect/sql/SqlClient"
import type { SqlError } from "effect/sql/SqlError"
import type { ChatState } from "./ChatFlowLogic.ts"
import type { Lang } from "../texts/Messages.ts"
import { ddl, Int8, int8Array } from "../database/SqlColumns.ts"
import { makeGroupedCalls } from "../platform/GroupedCalls.ts"

/** Migration 0004: one row per chat. */
export const migration = ddl(
  `CREATE TABLE chat_sessions (
    chat_id bigint PRIMARY KEY,
    user_id bigint,
    state text NOT NULL CHECK (state IN ('idle', 'waiting_prompt', 'waiting_aspect_ratio')),
    prompt text,
    keyboard_message_id bigint,
    lang text NOT NULL DEFAULT 'ru',
    last_update_id bigint NOT NULL DEFAULT 0,
    updated_at timestamptz NOT NULL,
    CHECK (state <> 'waiting_aspect_ratio' OR prompt IS NOT NULL)
  )`
)

/**
 * Migration 0009 (part): one row per (chat, user). Rows of private chats that
 * never recorded a user get the chat's id (the same number); a group row
 * without a user keeps its data under the chat's (negative) id, which no user
 * has, rather than being dropped.
 */
export const migrationPerUser = ddl(
  `UPDATE chat_sessions SET user_id = chat_id WHERE user_id IS NULL`,
  `ALTER TABLE chat_sessions ALTER COLUMN user_id SET NOT NULL`,
  `ALTER TABLE chat_sessions DROP CONSTRAINT chat_sessions_pkey`,
  `ALTER TABLE chat_sessions ADD PRIMARY KEY (chat_id, user_id)`
)

/**
 * Migration 0011 (part): the user's chosen model, and the photos of an edit
 * waiting for its instruction (a photo sent without a caption).
 */
export const migrationModels = ddl(
  `ALTER TABLE chat_sessions ADD COLUMN model text`,
  `ALTER TABLE chat_sessions ADD COLUMN edit_file_ids jsonb`,
  `ALTER TABLE chat_sessions ADD COLUMN edit_media_group_id text`,
  `ALTER TABLE chat_sessions DROP CONSTRAINT chat_sessions_state_check`,
  `ALTER TABLE chat_sessions ADD CONSTRAINT chat_sessions_state_check
    CHECK (state IN ('idle', 'waiting_prompt', 'waiting_aspect_ratio', 'waiting_edit'))`,
  `ALTER TABLE chat_sessions ADD CONSTRAINT chat_sessions_edit_check
    CHECK (state <> 'waiting_edit' OR edit_file_ids IS NOT NULL)`
)

const Row = Schema.Struct({
  state: Schema.Literals(["idle", "waiting_prompt", "waiting_aspect_ratio", "waiting_edit"]),
  prompt: Schema.NullOr(Schema.String),
  keyboard_message_id: Schema.NullOr(Int8),
  lang: Schema.Literals(["ru", "en"]),
  last_update_id: Int8,
  model: Schema.NullOr(Schema.String),
  edit_file_ids: Schema.NullOr(Schema.Array(Schema.String)),
  edit_media_group_id: Schema.NullOr(Schema.String)
})

/** A chat's place in the conversation. */
export interface ChatSession {
  readonly state: ChatState
  readonly lang: Lang
  /** The last update whose handling completed. */
  readonly lastUpdateId: number
  /** The model the user last chose (`zimage:model:<id>`), if any. */
  readonly model?: string | null | undefined
}

const toState = (row: typeof Row.Type): ChatState => {
  switch (row.state) {
    case "idle":
      return { _tag: "Idle" }
    case "waiting_prompt":
      return { _tag: "WaitingPrompt" }
    case "waiting_aspect_ratio":
      return { _tag: "WaitingAspectRatio", prompt: row.prompt ?? "", keyboardMessageId: row.keyboard_message_id }
    case "waiting_edit":
      return { _tag: "WaitingEdit", fileIds: row.edit_file_ids ?? [], mediaGroupId: row.edit_media_group_id }
  }
}

const columnsOf = (state: ChatState) => {
  switch (state._tag) {
    case "Idle":
      return { state: "idle", prompt: null, keyboardMessageId: null, editGroup: null }
    case "WaitingPrompt":
      return { state: "waiting_prompt", prompt: null, keyboardMessageId: null, editGroup: null }
    case "WaitingAspectRatio":
      return {
        state: "waiting_aspect_ratio",
        prompt: state.prompt,
        keyboardMessageId: state.keyboardMessageId,
        editGroup: null
      }
    case "WaitingEdit":
      return {
        state: "waiting_edit",
        prompt: null,
        keyboardMessageId: null,
        editGroup: state.mediaGroupId
      }
  }
}

/** A session to store for a user in a chat (see `ChatSessions.saveMany`). */
export interface SessionEntry {
  readonly chatId: number
  readonly userId: number
  readonly session: ChatSession
}

/** Reads (grouped) sharing one SELECT at most. */
const MAX_READS_PER_STATEMENT = 256

const KeyedRow = Schema.Struct({ ...Row.fields, chat_id: Int8, user_id: Int8 })
const decodeKeyedRows = Schema.decodeUnknownEffect(Schema.Array(KeyedRow))

const sessionOf = (row: typeof Row.Type): ChatSession => ({
  state: toState(row),
  lang: row.lang,
  lastUpdateId: row.last_update_id,
  model: row.model
})

const keyOf = (chatId: number, userId: number) => `${chatId}:${userId}`

/** The rows of one upsert: one per (chat, user), the latest update's where a batch has two. */
const rowsJsonOf = (entries: ReadonlyArray<SessionEntry>, at: string): string => {
  const latest = new Map<string, SessionEntry>()
  for (const entry of entries) {
    const key = keyOf(entry.chatId, entry.userId)
    const seen = latest.get(key)
    if (seen === undefined || seen.session.lastUpdateId <= entry.session.lastUpdateId) latest.set(key, entry)
  }
  return JSON.stringify([...latest.values()].map(({ chatId, session, userId }) => {
    const columns = columnsOf(session.state)
    return {
      chat_id: chatId,
      user_id: userId,
      state: columns.state,
      prompt: columns.prompt,
      keyboard_message_id: columns.keyboardMessageId,
      lang: session.lang,
      last_update_id: session.lastUpdateId,
      updated_at: at,
      model: session.model ?? null,
      edit_file_ids: session.state._tag === "WaitingEdit" ? session.state.fileIds : null,
      edit_media_group_id: columns.editGroup
    }
  }))
}

/** The `chat_sessions` table's service. Needs `SqlClient` (migrations 0004 and 0009 applied). */
export class ChatSessions extends Context.Service<ChatSessions, {
  /**
   * The user's session in the chat; `None` when they never talked to us
   * there. Concurrent reads share one SELECT (`platform/GroupedCalls.ts`).
   */
  readonly get: (chatId: number, userId: number) => Effect.Effect<Option.Option<ChatSession>, SqlError>
  /**
   * Stores the state reached by handling `updateId`. An older update never
   * overwrites a newer one's state.
   */
  readonly save: (
    chatId: number,
    userId: number,
    session: ChatSession
  ) => Effect.Effect<void, SqlError>
  /**
   * `save` for many sessions in one statement (run it inside the caller's
   * transaction to commit it with other writes). Of two entries for the same
   * (chat, user) the later update's is kept.
   */
  readonly saveMany: (entries: ReadonlyArray<SessionEntry>) => Effect.Effect<void, SqlError>
}>()("zimage-bot/ChatSessions") {
  static readonly layer = Layer.effect(
    ChatSessions,
    Effect.gen(function*() {
      const sql = yield* SqlClient

      /**
       * The sessions of `keys`, in their order (`None` for a user with none).
       *
       * Why `= ANY` on both key columns, not a join with the keys: the
       * planner guesses 100 rows for any set-returning function, and with
       * that guess it read the whole table (a hash join over a sequential
       * scan) on every read until the table was very large: 0.67 ms a read
       * at 12,000 sessions, growing with every new user. `= ANY` on the
       * primary key's columns is an index scan at any size. It can also
       * return a user's session in another chat of the batch; the exact
       * (chat, user) lookup below leaves those out.
       */
      const getMany = (keys: ReadonlyArray<{ readonly chatId: number; readonly userId: number }>) =>
        sql`SELECT chat_id, user_id, state, prompt, keyboard_message_id, lang, last_update_id, model,
          edit_file_ids, edit_media_group_id
          FROM chat_sessions
          WHERE chat_id = ANY(${int8Array(new Set(keys.map((k) => k.chatId)))})
            AND user_id = ANY(${int8Array(new Set(keys.map((k) => k.userId)))})`.pipe(
          Effect.flatMap((rows) => Effect.orDie(decodeKeyedRows(rows))),
          Effect.map((rows) => {
            const found = new Map(rows.map((row) => [keyOf(row.chat_id, row.user_id), sessionOf(row)]))
            return keys.map((k) => Option.fromUndefinedOr(found.get(keyOf(k.chatId, k.userId))))
          })
        )
      const groupedGet = yield* makeGroupedCalls({ run: getMany, maxPerCall: MAX_READS_PER_STATEMENT })
      const get = (chatId: number, userId: number) =>
        groupedGet({ chatId, userId }).pipe(
          Effect.catchTag("GroupedCallsClosed", () => Effect.die("chat sessions read after shutdown"))
        )

      const saveMany = (entries: ReadonlyArray<SessionEntry>) =>
        entries.length === 0 ? Effect.void : Effect.gen(function*() {
          const at = DateTime.formatIso(yield* DateTime.now)
          yield* sql`
            INSERT INTO chat_sessions (chat_id, user_id, state, prompt, keyboard_message_id, lang, last_update_id, updated_at,
              model, edit_file_ids, edit_media_group_id)
            SELECT r.chat_id, r.user_id, r.state, r.prompt, r.keyboard_message_id, r.lang, r.last_update_id, r.updated_at,
              r.model, r.edit_file_ids, r.edit_media_group_id
            FROM jsonb_to_recordset(${rowsJsonOf(entries, at)}::jsonb) AS r(chat_id bigint, user_id bigint, state text,
              prompt text, keyboard_message_id bigint, lang text, last_update_id bigint, updated_at timestamptz,
              model text, edit_file_ids jsonb, edit_media_group_id text)
            ON CONFLICT (chat_id, user_id) DO UPDATE SET
              state = EXCLUDED.state,
              model = coalesce(EXCLUDED.model, chat_sessions.model),
              edit_file_ids = EXCLUDED.edit_file_ids,
              edit_media_group_id = EXCLUDED.edit_media_group_id,
              prompt = EXCLUDED.prompt,
              keyboard_message_id = EXCLUDED.keyboard_message_id,
              lang = EXCLUDED.lang,
              last_update_id = EXCLUDED.last_update_id,
              updated_at = EXCLUDED.updated_at
            WHERE chat_sessions.last_update_id <= EXCLUDED.last_update_id`
        })

      const save = (chatId: number, userId: number, session: ChatSession) => saveMany([{ chatId, userId, session }])

      return ChatSessions.of({ get, save, saveMany })
    })
  )
}
