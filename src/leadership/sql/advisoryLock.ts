/**
 * What every statement about the leader lock shares: how a key is written in
 * SQL, how `pg_locks` shows the lock, and the channel a release is announced on.
 */

/**
 * Every lock session LISTENs here. A releasing holder notifies it with its
 * key, so standbys try at once instead of at their next tick; and the
 * listener is how a session learns within milliseconds that its connection
 * dropped (see `LockSession.ts`).
 */
export const leaderChannel = "zimage_bot_leader"

/** A bigint literal; quoted so that -2^63 parses too. */
export const keyLiteral = (key: bigint) => `'${key.toString()}'::bigint`

/**
 * The `pg_locks l` row of a granted advisory lock on `key` in this database.
 * `pg_locks` stores a bigint advisory key as classid (high 32 bits) and objid
 * (low 32 bits) with objsubid = 1.
 */
export const lockRowMatches = (key: bigint) => `l.locktype = 'advisory' AND l.granted AND l.objsubid = 1
  AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
  AND ((l.classid::bigint << 32) | l.objid::bigint) = ${keyLiteral(key)}`
