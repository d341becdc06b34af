/**
 * Status transitions. Each is one `UPDATE ... WHERE status ...` that returns
 * whether it applied: false when the row had already moved on (another fiber,
 * a previous leader, or the deadline sweep got there first).
 *
 * | transition   | from                          | to         | also writes                          |
 * | ------------ | ----------------------------- | ---------- | ------------------------------------ |
 * | submitting   | queued, submitting            | submitting | `submit_ref`, `submitted_at`         |
 * | submitted    | queued, submitting            | submitted  | `kie_task_id`, first `next_poll_at`  |
 * | requeue      | submitting                    | queued     | clears `submit_ref`                  |
 * | succeeded    | submitted                     | succeeded  | `result_urls`, `completed_at`        |
 * | delivered    | succeeded                     | delivered  | `delivered_at`                       |
 * | failed       | any unfinished                | failed     | `fail_code/_message/_reason`         |
 * | retried      | failed (not retried by other) | failed     | `retried_by`                         |
 * | notified     | any                           | (same)     | `notified_at`, may free status msg   |
 */
import { DateTime, Effect } from "effect"
import type { SqlClient } from "effect/sql/SqlClient"
import type { SqlError } from "effect/sql/SqlError"
import { asDate, unfinished, updated } from "./row.ts"

/** queued → submitting, just before createTask is sent (again, for a retry of the same call). */
export const markSubmitting = (sql: SqlClient, id: string, ref: string) =>
  Effect.flatMap(DateTime.now, (at) =>
    updated(sql`
      UPDATE generations SET status = 'submitting', submit_ref = ${ref}, submitted_at = ${asDate(at)},
        updated_at = ${asDate(at)}
      WHERE id = ${id}::bigint AND status IN ('queued', 'submitting') RETURNING id`))

/** submitting → submitted with the task id, in one statement. */
export const markSubmitted = (sql: SqlClient, id: string, taskId: string, firstPollAt: DateTime.Utc) =>
  Effect.flatMap(DateTime.now, (at) =>
    updated(sql`
      UPDATE generations SET status = 'submitted', kie_task_id = ${taskId},
        submitted_at = coalesce(submitted_at, ${asDate(at)}),
        next_poll_at = ${asDate(firstPollAt)}, updated_at = ${asDate(at)}
      WHERE id = ${id}::bigint AND status IN ('queued', 'submitting') RETURNING id`))

/** submitting → queued: createTask proved that nothing was created. */
export const requeue = (sql: SqlClient, id: string) =>
  Effect.flatMap(DateTime.now, (at) =>
    updated(sql`
      UPDATE generations SET status = 'queued', submit_ref = NULL, updated_at = ${asDate(at)}
      WHERE id = ${id}::bigint AND status = 'submitting' RETURNING id`))

/** submitted → succeeded with the result URLs; polling stops. */
export const markSucceeded = (sql: SqlClient, id: string, resultUrls: ReadonlyArray<string>) =>
  Effect.flatMap(DateTime.now, (at) =>
    updated(sql`
      UPDATE generations SET status = 'succeeded', result_urls = ${JSON.stringify(resultUrls)}::jsonb,
        completed_at = ${asDate(at)}, next_poll_at = NULL, updated_at = ${asDate(at)}
      WHERE id = ${id}::bigint AND status = 'submitted' RETURNING id`))

/** succeeded → delivered. */
export const markDelivered = (sql: SqlClient, id: string) =>
  Effect.flatMap(DateTime.now, (at) =>
    updated(sql`
      UPDATE generations SET status = 'delivered', delivered_at = ${asDate(at)}, updated_at = ${asDate(at)}
      WHERE id = ${id}::bigint AND status = 'succeeded' RETURNING id`))

/** Any unfinished status → failed; the texts are cut to the lengths operators and users can read. */
export const markFailed = (sql: SqlClient, id: string, code: string, message: string, reason?: string) =>
  Effect.flatMap(DateTime.now, (at) =>
    updated(sql`
      UPDATE generations SET status = 'failed', fail_code = ${code.slice(0, 100)},
        fail_message = ${message.slice(0, 1000)}, fail_reason = ${reason === undefined ? null : reason.slice(0, 1000)},
        completed_at = ${asDate(at)}, next_poll_at = NULL, updated_at = ${asDate(at)}
      WHERE id = ${id}::bigint AND status IN (${unfinished}) RETURNING id`))

/** Failed generation `id` was retried as `retryId`; false if another retry claimed it first. */
export const markRetried = (sql: SqlClient, id: string, retryId: string) =>
  Effect.flatMap(DateTime.now, (at) =>
    updated(sql`
      UPDATE generations SET retried_by = ${retryId}::bigint, updated_at = ${asDate(at)}
      WHERE id = ${id}::bigint AND status = 'failed' AND (retried_by IS NULL OR retried_by = ${retryId}::bigint)
      RETURNING id`))

/**
 * The user was told about the failure. `consumedStatusMessage`, the status
 * message that now shows the failure, is no longer a progress message.
 */
export const markNotified = (sql: SqlClient, id: string, consumedStatusMessage?: number) =>
  Effect.flatMap(
    DateTime.now,
    (at) =>
      sql`UPDATE generations SET notified_at = ${asDate(at)}, updated_at = ${asDate(at)},
          status_message_id = CASE WHEN status_message_id = ${consumedStatusMessage ?? null}::bigint
            THEN NULL ELSE status_message_id END
        WHERE id = ${id}::bigint`.pipe(Effect.asVoid)
  )

/**
 * An edit's pictures were uploaded: Kie fetches them at `urls`. Only while
 * the row still waits to be sent, and only once: a second upload after a
 * failover keeps the first URLs, so createTask always names the same files.
 */
export const setInputUrls = (sql: SqlClient, id: string, urls: ReadonlyArray<string>) =>
  Effect.flatMap(DateTime.now, (at) =>
    updated(sql`
      UPDATE generations SET input_urls = ${JSON.stringify(urls)}::jsonb, updated_at = ${asDate(at)}
      WHERE id = ${id}::bigint AND status = 'queued' AND input_urls IS NULL RETURNING id`))

/**
 * A later photo of an album joins the edit its first photo started, while
 * that edit is still queued and not uploaded, up to `max` pictures. Answers
 * `joined`, `full` (the edit has `max` already), or `none` (no such edit
 * waits: it was uploaded, or the album started none).
 */
export const joinAlbum = (
  sql: SqlClient,
  userId: number,
  mediaGroupId: string,
  fileId: string,
  max: number
): Effect.Effect<"joined" | "full" | "none", SqlError> =>
  Effect.gen(function*() {
    const at = yield* DateTime.now
    const joined = yield* sql`
      UPDATE generations SET input_file_ids = input_file_ids || ${JSON.stringify([fileId])}::jsonb,
        updated_at = ${asDate(at)}
      WHERE user_id = ${userId} AND media_group_id = ${mediaGroupId} AND status = 'queued' AND input_urls IS NULL
        AND jsonb_array_length(input_file_ids) < ${max} AND NOT input_file_ids ? ${fileId}
      RETURNING id`
    if (joined.length > 0) return "joined"
    const waiting = yield* sql`
      SELECT id FROM generations WHERE user_id = ${userId} AND media_group_id = ${mediaGroupId}
        AND status = 'queued' AND input_urls IS NULL`
    return waiting.length > 0 ? "full" : "none"
  })
