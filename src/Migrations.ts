/**
 * The ordered list of schema migrations. Each table's DDL lives in the module
 * that owns the table; this list only fixes the order in which they run.
 * Never edit or renumber an applied migration: add a new one.
 */
import { Effect } from "effect"
import type { Migrations } from "./database/Database.ts"
import * as ChatRetention from "./chat/Retention.ts"
import * as ChatSessions from "./chat/ChatSessions.ts"
import * as Generations from "./generations/Generations.ts"
import * as Inbox from "./inbox/Inbox.ts"
import * as KieCallback from "./kie/KieCallback.ts"
import * as Telegram from "./telegram/Telegram.ts"

/** Every migration, by `<number>_<name>`. */
export const migrations: Migrations = {
  "0001_telegram_updates": Inbox.migration,
  "0002_telegram_chats": Telegram.migration,
  "0003_kie_tasks": KieCallback.migration,
  "0004_chat_sessions": ChatSessions.migration,
  "0005_generations": Generations.migration,
  "0006_generation_engine": Generations.migrationEngine,
  "0007_generation_retries": Generations.migrationRetries,
  "0008_generations_submitted_at": Generations.migrationSentAt,
  "0009_group_chats": Effect.andThen(ChatSessions.migrationPerUser, Generations.migrationThreads),
  "0010_retention": Effect.andThen(Generations.migrationCreatedAt, ChatRetention.migration),
  "0011_models": Effect.andThen(ChatSessions.migrationModels, Generations.migrationEdits),
  "0012_inbox_claim_window": Inbox.migrationClaimReads,
  "0013_inbox_pending_chat": Inbox.migrationPendingChat,
  "0014_inbox_unfinished_chat": Inbox.migrationUnfinishedChat
}
