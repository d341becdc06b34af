/** Storing the fingerprint of the webhook just set. */
import type { SqlClient } from "effect/sql/SqlClient"

/** Replaces the one stored fingerprint. */
export const storeFingerprint = (sql: SqlClient, fingerprint: string, at: Date) => sql`
    INSERT INTO telegram_webhook (id, fingerprint, set_at) VALUES (1, ${fingerprint}, ${at})
    ON CONFLICT (id) DO UPDATE SET fingerprint = EXCLUDED.fingerprint, set_at = EXCLUDED.set_at`
