/**
 * The ceiling of the `/start` figure: a plain grammY webhook bot that answers
 * `/start` from memory, with no database, no durability and no Effect. It is
 * what any bot written with grammY reaches on this machine, so the bench
 * shows the service's end-to-end rate as a share of it.
 *
 * It runs as a process of its own, like the service, on the same fake Bot API
 * (the `apiRoot` given), behind the same webhook secret, and answers with a
 * message of the same shape as the service's welcome (text and one button).
 *
 *   node bench/grammyCeiling.ts <port> <apiRoot> <token> <secret>   # prints "listening" when ready
 */
import { Bot, webhookCallback } from "grammy"
import { createServer } from "node:http"

const [port, apiRoot, token, secret] = process.argv.slice(2)
if (port === undefined || apiRoot === undefined || token === undefined || secret === undefined) {
  throw new Error("usage: node bench/grammyCeiling.ts <port> <apiRoot> <token> <secret>")
}

// botInfo given, so the bot never calls getMe: nothing but sendMessage reaches the Bot API.
const bot = new Bot(token, {
  client: { apiRoot },
  botInfo: {
    id: 1,
    is_bot: true,
    first_name: "ceiling",
    username: "ceiling_bot",
    can_join_groups: true,
    can_read_all_group_messages: false,
    supports_inline_queries: false,
    can_connect_to_business: false,
    has_main_web_app: false,
    has_topics_enabled: false,
    allows_users_to_create_topics: false,
    can_manage_bots: false,
    supports_join_request_queries: false
  }
})

const welcome = "👋 Hi! I draw pictures from a text description with the Z-Image model.\n\n" +
  "Press the button and send a description."
bot.command("start", (ctx) =>
  ctx.reply(welcome, {
    reply_markup: { inline_keyboard: [[{ text: "🎨 Generate", callback_data: "zimage:generate" }]] }
  }))

const handle = webhookCallback(bot, "http", { secretToken: secret })
const server = createServer((request, response) => void handle(request, response))
server.listen(Number(port), "127.0.0.1", () => process.stdout.write("listening\n"))
process.on("SIGTERM", () => server.close(() => process.exit(0)))
