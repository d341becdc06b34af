/**
 * Recording the chat messages that belong to a generation: its status
 * message ("⏳ Генерирую...") and the text last shown in it, the result
 * message and the original as a document. Each is written the moment
 * Telegram accepted it, so a resumed delivery never sends it again.
 */
import { DateTime, Effect } from "effect"
import type { SqlClient } from "effect/sql/SqlClient"
import { asDate } from "./row.ts"

/** The status message and the text it shows. */
export const setStatusMessage = (sql: SqlClient, id: string, messageId: number, text: string) =>
  Effect.flatMap(
    DateTime.now,
    (at) =>
      sql`UPDATE generations SET status_message_id = ${messageId}, status_text = ${text},
          status_edited_at = ${asDate(at)}, updated_at = ${asDate(at)}
        WHERE id = ${id}::bigint`.pipe(Effect.asVoid)
  )

/** The text last shown in the status message. */
export const setStatusText = (sql: SqlClient, id: string, text: string) =>
  Effect.flatMap(
    DateTime.now,
    (at) =>
      sql`UPDATE generations SET status_text = ${text}, status_edited_at = ${asDate(at)}, updated_at = ${asDate(at)}
        WHERE id = ${id}::bigint`.pipe(Effect.asVoid)
  )

/** The status message `messageId` was finalized (deleted or replaced): forget it, unless another took its place. */
export const clearStatusMessage = (sql: SqlClient, id: string, messageId: number) =>
  Effect.flatMap(DateTime.now, (at) =>
    sql`UPDATE generations SET status_message_id = NULL, updated_at = ${asDate(at)}
        WHERE id = ${id}::bigint AND status_message_id = ${messageId}`.pipe(Effect.asVoid))

/** The message that carries the result (photo, or document when too large). */
export const setPhotoMessage = (sql: SqlClient, id: string, messageId: number) =>
  Effect.flatMap(
    DateTime.now,
    (at) =>
      sql`UPDATE generations SET photo_message_id = ${messageId}, updated_at = ${asDate(at)}
        WHERE id = ${id}::bigint`.pipe(Effect.asVoid)
  )

/** The message with the uncompressed original. */
export const setDocumentMessage = (sql: SqlClient, id: string, messageId: number) =>
  Effect.flatMap(
    DateTime.now,
    (at) =>
      sql`UPDATE generations SET document_message_id = ${messageId}, updated_at = ${asDate(at)}
        WHERE id = ${id}::bigint`.pipe(Effect.asVoid)
  )
