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
 * The table's SQL (its DDL and two statements) stays in this file rather than
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
import { ddl, Int8 } from "../database/SqlColumns.ts"

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
const decodeRow = Schema.decodeUnknownEffect(Row)

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
      return { state: "idle", prompt: null, keyboardMessageId: null, editFileIds: null, editGroup: null }
    case "WaitingPrompt":
      return { state: "waiting_prompt", prompt: null, keyboardMessageId: null, editFileIds: null, editGroup: null }
    case "WaitingAspectRatio":
      return {
        state: "waiting_aspect_ratio",
        prompt: state.prompt,
        keyboardMessageId: state.keyboardMessageId,
        editFileIds: null,
        editGroup: null
      }
    case "WaitingEdit":
      return {
        state: "waiting_edit",
        prompt: null,
        keyboardMessageId: null,
        editFileIds: JSON.stringify(state.fileIds),
        editGroup: state.mediaGroupId
      }
  }
}

/** The `chat_sessions` table's service. Needs `SqlClient` (migrations 0004 and 0009 applied). */
export class ChatSessions extends Context.Service<ChatSessions, {
  /** The user's session in the chat; `None` when they never talked to us there. */
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
}>()("zimage-bot/ChatSessions") {
  static readonly layer = Layer.effect(
    ChatSessions,
    Effect.gen(function*() {
      const sql = yield* SqlClient

      const get = (chatId: number, userId: number) =>
        sql`SELECT state, prompt, keyboard_message_id, lang, last_update_id, model, edit_file_ids,
          edit_media_group_id FROM chat_sessions
          WHERE chat_id = ${chatId} AND user_id = ${userId}`
          .pipe(
            Effect.flatMap((rows) =>
              rows.length === 0
                ? Effect.succeed(Option.none<ChatSession>())
                : decodeRow(rows[0]).pipe(
                  Effect.map((row) =>
                    Option.some<ChatSession>({
                      state: toState(row),
                      lang: row.lang,
                      lastUpdateId: row.last_update_id,
                      model: row.model
                    })
                  ),
                  Effect.orDie
                )
            )
          )

      const save = (chatId: number, userId: number, session: ChatSession) =>
        Effect.gen(function*() {
          const at = DateTime.toDateUtc(yield* DateTime.now)
          const columns = columnsOf(session.state)
          yield* sql`
            INSERT INTO chat_sessions (chat_id, user_id, state, prompt, keyboard_message_id, lang, last_update_id, updated_at,
              model, edit_file_ids, edit_media_group_id)
            VALUES (${chatId}, ${userId}, ${columns.state}, ${columns.prompt}, ${columns.keyboardMessageId},
              ${session.lang}, ${session.lastUpdateId}, ${at}, ${session.model ?? null}, ${columns.editFileIds}::jsonb,
              ${columns.editGroup})
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

      return ChatSessions.of({ get, save })
    })
  )
}
