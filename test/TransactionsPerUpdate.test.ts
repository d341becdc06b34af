/**
 * What the dispatch side of a `/start` costs the database, counted by
 * PostgreSQL itself (`pg_stat_database`): a backlog of `/start`s from
 * distinct chats, stored while no instance runs, is claimed, answered and
 * finished by the whole service, and the database's transactions over that
 * stretch are divided by their number; so are the round trips of the app's
 * connections, which go through a counting proxy (`support/PgProxy.ts`).
 *
 * The app is started once on the database and stopped (migrations and their
 * statistics out of the way), then started again for the backlog, and
 * stopped before the count is read: a backend's statistics are flushed when it
 * exits, so nothing is still pending in a pooled connection. The leader's own
 * start and stop are counted too, so the bound is on the whole. Storing (the
 * webhook's INSERT and its NOTIFY, which wakes every LISTEN connection of the
 * database) is not in this count; `npm run bench` measures it end to end.
 */
import { assert, describe, it } from "@effect/vitest"
import { PgClient } from "@effect/sql-pg"
import { Effect, Redacted } from "effect"
import { SqlClient } from "effect/sql/SqlClient"
import * as FakeTelegram from "./fakes/FakeTelegram.ts"
import { startPgProxy } from "./support/PgProxy.ts"
import { freePort, startAppScoped } from "./support/TestApp.ts"
import { TEST_WEBHOOK_SECRET } from "./support/TestConfig.ts"
import { freshDatabaseUrl } from "./support/TestDatabase.ts"

/** `/start`s in the burst. */
const STARTS = 200
/**
 * At most this many transactions per `/start` from its claim to its finish
 * (claim, session read, reply, finish with the session; the leader's start
 * and stop included). Before the finishes were group-committed it was about
 * 4: a read, a blocked-chat check, a save and a finish per update.
 */
const MAX_TRANSACTIONS_PER_START = 1
/**
 * At most this many round trips to the database per `/start` over the same
 * stretch, counted by a proxy in front of the app's connections (each
 * statement, BEGIN and COMMIT is one). Measured about 0.75: in a backlog the
 * claims, the session reads and the finishes are grouped so widely that a
 * finish's BEGIN and COMMIT are shared by many updates (the finish as one
 * statement with chained CTEs measured about 0.7, not worth its machinery).
 */
const MAX_ROUND_TRIPS_PER_START = 1

/** Runs `effect` on a connection of its own to `url` (not one of the app's). */
const onDatabase = <A, E>(url: string, effect: Effect.Effect<A, E, SqlClient>) =>
  effect.pipe(Effect.provide(PgClient.layer({ url: Redacted.make(url), maxConnections: 1 })), Effect.orDie)

/** The database's committed and rolled-back transactions so far, once the figure has settled. */
const settledTransactions = (url: string) =>
  onDatabase(
    url,
    Effect.gen(function*() {
      const sql = yield* SqlClient
      const read = Effect.gen(function*() {
        yield* sql`SELECT pg_stat_clear_snapshot()`
        const [row] = yield* sql<{ n: string }>`
          SELECT (xact_commit + xact_rollback)::text AS n FROM pg_stat_database WHERE datname = current_database()`
        return Number(row!.n)
      })
      // Exiting backends flush their statistics; wait until two readings 300 ms apart agree
      // (each reading is two transactions of its own).
      let last = yield* read
      for (let round = 0; round < 50; round++) {
        yield* Effect.promise(() => new Promise((resolve) => setTimeout(resolve, 300)))
        const now = yield* read
        if (now - last <= 2) return now
        last = now
      }
      return last
    })
  )

describe("transactions per update", () => {
  it.live(
    `a backlog of ${STARTS} /starts is claimed, answered and finished in at most ${MAX_TRANSACTIONS_PER_START} transaction and ${MAX_ROUND_TRIPS_PER_START} round trip per /start`,
    () =>
      Effect.gen(function*() {
        const fake = yield* FakeTelegram.make()
        const url = yield* freshDatabaseUrl
        const port = yield* freePort
        const env = {
          ...fake.env,
          DATABASE_URL: url,
          PORT: String(port),
          PUBLIC_URL: `http://127.0.0.1:${port}`,
          TELEGRAM_WEBHOOK_SECRET: TEST_WEBHOOK_SECRET
        }
        // Migrations, setWebhook and setMyCommands happen here, not in the count.
        const first = yield* startAppScoped(env)
        yield* fake.awaitCall("setWebhook", undefined, { timeoutMs: 10_000 })
        yield* first.stop

        // The backlog, stored as the inbox stores it, while no instance runs.
        const chats = Array.from({ length: STARTS }, (_, i) => 7_000_000 + i)
        const updates = chats.map((chatId, i) =>
          FakeTelegram.textMessage({ chatId, text: "/start", updateId: 900_000 + i })
        )
        yield* onDatabase(
          url,
          Effect.gen(function*() {
            const sql = yield* SqlClient
            yield* sql`
            INSERT INTO telegram_updates (update_id, chat_id, user_id, kind, payload, received_at)
            SELECT (u->>'update_id')::bigint, (u#>>'{message,chat,id}')::bigint, (u#>>'{message,from,id}')::bigint,
              'message', u, now()
            FROM jsonb_array_elements(${JSON.stringify(updates)}::jsonb) u`
          })
        )

        const before = yield* settledTransactions(url)
        const mark = fake.mark()
        // The app's connections go through a proxy that counts their round trips.
        const proxy = yield* startPgProxy(url)
        const { stop } = yield* startAppScoped({ ...env, DATABASE_URL: proxy.url })
        for (const chatId of chats) {
          yield* fake.awaitCall("sendMessage", (c) => Number(c.params.chat_id) === chatId, {
            after: mark,
            timeoutMs: 30_000
          })
        }
        // A graceful stop lets every running finish commit; the pool's backends flush their statistics as they exit.
        yield* stop
        const after = yield* settledTransactions(url)
        const perStart = (after - before) / STARTS
        const roundTripsPerStart = proxy.roundTrips() / STARTS
        console.log(
          `per /start, a backlog of ${STARTS}: ${perStart.toFixed(2)} transactions, ${
            roundTripsPerStart.toFixed(2)
          } round trips`
        )
        assert.isAtMost(perStart, MAX_TRANSACTIONS_PER_START)
        assert.isAtMost(roundTripsPerStart, MAX_ROUND_TRIPS_PER_START)
        // And the work was all done: every update finished, every chat's state saved.
        const [counts] = yield* onDatabase(
          url,
          Effect.gen(function*() {
            const sql = yield* SqlClient
            return yield* sql<{ done: string; sessions: string }>`
            SELECT (SELECT count(*) FROM telegram_updates WHERE status = 'done' AND update_id >= 900000)::text AS done,
                   (SELECT count(*) FROM chat_sessions WHERE chat_id >= 7000000 AND state = 'idle')::text AS sessions`
          })
        )
        assert.deepStrictEqual({ ...counts }, { done: String(STARTS), sessions: String(STARTS) })
      }),
    { timeout: 120_000 }
  )
})
