/**
 * The `generations` table's DDL, one export per migration (their order is
 * fixed in `Migrations.ts`).
 *
 * Gotchas: an applied migration never changes. The status lists below are
 * written out on purpose: they record what the table was created with, and
 * must not follow later edits of the status constants in `row.ts`.
 */
import { ddl } from "../../database/SqlColumns.ts"

/** Migration 0005: the table, its CHECKs and the indexes of the hot queries. */
export const migration = ddl(
  `CREATE TABLE generations (
    id bigserial PRIMARY KEY,
    user_id bigint NOT NULL,
    chat_id bigint NOT NULL,
    lang text NOT NULL,
    prompt text NOT NULL,
    aspect_ratio text NOT NULL,
    model text NOT NULL DEFAULT 'z-image',
    status text NOT NULL DEFAULT 'queued'
      CHECK (status IN ('queued', 'submitting', 'submitted', 'succeeded', 'delivered', 'failed')),
    source_update_id bigint UNIQUE,
    submit_ref text,
    kie_task_id text UNIQUE,
    status_message_id bigint,
    status_text text,
    status_edited_at timestamptz,
    photo_message_id bigint,
    result_urls jsonb,
    fail_code text,
    fail_message text,
    created_at timestamptz NOT NULL,
    deadline_at timestamptz NOT NULL,
    submitted_at timestamptz,
    next_poll_at timestamptz,
    completed_at timestamptz,
    delivered_at timestamptz,
    notified_at timestamptz,
    updated_at timestamptz NOT NULL,
    CHECK (status NOT IN ('submitted', 'succeeded', 'delivered') OR kie_task_id IS NOT NULL)
  )`,
  `CREATE INDEX generations_active ON generations (status, created_at)
    WHERE status IN ('queued', 'submitting', 'submitted', 'succeeded')`,
  `CREATE INDEX generations_user_created ON generations (user_id, created_at)`,
  `CREATE INDEX generations_unnotified ON generations (id) WHERE status = 'failed' AND notified_at IS NULL`
)

/**
 * Migration 0006, for the generation engine:
 * - `fail_reason`: what the user is told (in their language), kept with the
 *   row so the notice survives a failover between failing and telling;
 *   `fail_code`/`fail_message` stay the operator's machine code and detail;
 * - `document_message_id`: the uncompressed original was sent (resume sends
 *   it only if this is empty);
 * - an index of finished rows whose status message still shows progress
 *   (the engine clears `status_message_id` once it finalized the message;
 *   the chat flow may record one after the row already finished).
 */
export const migrationEngine = ddl(
  `ALTER TABLE generations ADD COLUMN fail_reason text`,
  `ALTER TABLE generations ADD COLUMN document_message_id bigint`,
  `CREATE INDEX generations_open_status_message ON generations (id)
    WHERE status IN ('delivered', 'failed') AND status_message_id IS NOT NULL`,
  `CREATE INDEX generations_poll_due ON generations (next_poll_at) WHERE status = 'submitted'`
)

/**
 * Migration 0007: `retried_by`, the generation a "🔄 Попробовать снова" press
 * started from this failed one, so a second press of that old button is stale.
 */
export const migrationRetries = ddl(`ALTER TABLE generations ADD COLUMN retried_by bigint`)

/**
 * Migration 0008: an index for `sentSince`, which a new leader runs to count
 * its predecessor's recent createTask requests; the table keeps every
 * generation, so a scan would grow with it.
 */
export const migrationSentAt = ddl(
  `CREATE INDEX generations_submitted_at ON generations (submitted_at) WHERE submitted_at IS NOT NULL`
)

/**
 * Migration 0009 (part): `message_thread_id`, the forum topic the generation
 * was asked for in. The engine sends the status, the picture and any failure
 * notice later, from the row alone, so the row must say where they go.
 */
export const migrationThreads = ddl(`ALTER TABLE generations ADD COLUMN message_thread_id bigint`)

/**
 * Migration 0010, for cost control and retention: an index on `created_at`,
 * which both the global daily budget (today's rows of all users) and the
 * retention pass (finished rows older than GENERATION_RETENTION_DAYS) read by
 * range; without it each would scan the whole table.
 */
export const migrationCreatedAt = ddl(`CREATE INDEX generations_created ON generations (created_at)`)

/**
 * Migration 0011 (part), for image editing. An edit's input pictures are
 * two stored steps of the row, so a failover resumes after the last one done:
 * - `input_file_ids`: the Telegram files (largest size of each photo) the
 *   user sent; set by the chat flow with the row;
 * - `input_urls`: where Kie can fetch them: set once the upload to Kie's
 *   file API finished (or at once, for a reply to a picture the bot made:
 *   its stored result URL). A queued row with file ids and no URLs still
 *   needs its upload; one with URLs goes straight to createTask.
 * - `media_group_id`: the album the photos came in; its later photos join
 *   the row until the upload starts;
 * - an index by chat, for finding the generation a reply to a delivered
 *   picture is about.
 */
export const migrationEdits = ddl(
  `ALTER TABLE generations ADD COLUMN input_file_ids jsonb`,
  `ALTER TABLE generations ADD COLUMN input_urls jsonb`,
  `ALTER TABLE generations ADD COLUMN media_group_id text`,
  `CREATE INDEX generations_chat ON generations (chat_id)`
)
