/** Reading one generation by its id or by its Kie task id. */
import { Effect } from "effect"
import type { SqlClient } from "effect/sql/SqlClient"
import { decodeRows, first } from "./row.ts"

/** The generation `id`, if it exists. */
export const find = (sql: SqlClient, id: string) =>
  sql`SELECT * FROM generations WHERE id = ${id}::bigint`.pipe(Effect.flatMap(decodeRows), Effect.map(first))

/** The generation Kie knows as `taskId`, if any. */
export const findByTaskId = (sql: SqlClient, taskId: string) =>
  sql`SELECT * FROM generations WHERE kie_task_id = ${taskId}`.pipe(Effect.flatMap(decodeRows), Effect.map(first))

/**
 * The generation whose picture (or original) is message `messageId` of
 * `chatId`: a reply to it edits that picture. Read through the
 * `generations_chat` index (one chat's rows).
 */
export const findByResultMessage = (sql: SqlClient, chatId: number, messageId: number) =>
  sql`SELECT * FROM generations WHERE chat_id = ${chatId}
    AND (photo_message_id = ${messageId} OR document_message_id = ${messageId})
    ORDER BY id DESC LIMIT 1`.pipe(Effect.flatMap(decodeRows), Effect.map(first))
