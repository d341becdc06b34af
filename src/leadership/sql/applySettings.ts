/**
 * Server-side settings of the lock session, applied only where the server
 * knows the setting (`tcp_user_timeout` is PG 12+, `idle_session_timeout` PG
 * 14+). Keepalives 10 s / 5 s / 3 make the server drop a vanished holder's
 * session, and so release the lock, after about 25 s without an answer;
 * `tcp_user_timeout` does the same when unacknowledged data is pending, where
 * keepalives do not run. The holder itself fences after ~3 s (heartbeat), long
 * before that. `idle_session_timeout = 0` keeps a server-wide setting from
 * killing the holder. `client_connection_check_interval` (PG 14+) makes a
 * backend notice within a second that its client has gone while it runs a
 * statement; that matters for a standby blocked in `pg_advisory_lock`, whose
 * backend would otherwise stay queued for the lock after the standby closed
 * the connection. On a unix socket the TCP settings do not apply and read
 * back as 0.
 */
import { Effect, Schema } from "effect"
import type { SessionQueries } from "./SessionQueries.ts"

const SettingRow = Schema.Struct({ name: Schema.String, value: Schema.String })

/**
 * The session's server-side bound of a statement. The standby lifts it while
 * it waits for the lock and puts it back once it holds it (`waitLock.ts`).
 */
export const sessionStatementTimeout = "5s"

const applySettingsSql = `SELECT name, set_config(name, value, false) AS value
FROM (VALUES ('statement_timeout', '${sessionStatementTimeout}'),
             ('client_connection_check_interval', '1s'),
             ('idle_session_timeout', '0'),
             ('idle_in_transaction_session_timeout', '0'),
             ('tcp_keepalives_idle', '10'),
             ('tcp_keepalives_interval', '5'),
             ('tcp_keepalives_count', '3'),
             ('tcp_user_timeout', '25000')) AS wanted(name, value)
WHERE name IN (SELECT name FROM pg_settings)`

/** Applies the settings; returns one line describing the TCP keepalives now in effect, for the log. */
export const applySettings = <E>(session: SessionQueries<E>) =>
  Effect.map(session.all(applySettingsSql, SettingRow), (settings) => {
    const setting = (name: string) => settings.find((s) => s.name === name)?.value ?? "n/a"
    return setting("tcp_keepalives_idle") === "0"
      ? "not applicable (unix socket)"
      : `idle=${setting("tcp_keepalives_idle")}s interval=${setting("tcp_keepalives_interval")}s count=${
        setting("tcp_keepalives_count")
      } user_timeout=${setting("tcp_user_timeout")}ms`
  })
