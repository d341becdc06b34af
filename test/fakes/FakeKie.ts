/**
 * A fake Kie.ai Market "jobs" API on 127.0.0.1, for tests of anything that
 * talks to Kie. It behaves like Kie as `docs/external-apis.md` describes it:
 *
 * - `POST /api/v1/jobs/createTask` and `GET /api/v1/jobs/recordInfo?taskId=`
 *   answer `{code,msg,data}`; errors are in the body `code` with HTTP 200 by
 *   default (Kie's quirk), or with a mirrored HTTP status when a step says so.
 * - `Authorization: Bearer <key>` is checked (401 in the body otherwise).
 * - createTask validates the input of each model it knows (`FAKE_MODELS`,
 *   written from Kie's docs: prompt limit, the ratio field and its values, the
 *   picture field and its count, the other fields allowed) and answers 422
 *   naming the field, like Kie.
 * - The account limit is enforced for real: at most `createLimit.count`
 *   accepted createTask requests in any sliding window of
 *   `createLimit.windowMs` (default 20 per 10 s), counted at arrival; over
 *   the limit the answer is body code 429 and no task is created (rejected
 *   requests do not count towards the window).
 * - recordInfo walks a per-task script of states, one step per poll; the last
 *   step repeats. `"null"` is Kie's `422 recordInfo is null`.
 * - Callbacks: `sendCallback(taskId)` POSTs the recordInfo-shaped body of the
 *   task's final state to its `callBackUrl` (or a given URL), signed like Kie
 *   (`X-Webhook-Timestamp` in Unix seconds, `X-Webhook-Signature` =
 *   base64(HMAC-SHA256(taskId + "." + timestamp, key))) when a key is set.
 *   With `autoCallback: true` it does so right after answering createTask.
 * - Result files: `GET /results/<name>` serves a real image (a small PNG by
 *   default, `serveResult(name, bytes)` for others), like Kie's temporary
 *   file host; `scriptResults(...)` makes the next downloads answer 404
 *   (an expired URL), hang, or answer after a real delay or once a gate opens. A success URL written as a path
 *   (`{ success: ["/results/a.png"] }`) is reported as an absolute URL on
 *   this fake, so clients can download it; its picture has the task's ratio
 *   (64 pixels on the short side) unless `serveResult` or `resultImage` set one.
 * - File upload: `POST /api/file-stream-upload` (multipart `file`,
 *   `uploadPath`, `fileName`, the same key) keeps the bytes and answers
 *   `data.downloadUrl` on this fake (`/uploads/<id>`); `scriptUploads` makes
 *   the next ones fail, `expireUploads` deletes them all (their URLs 404).
 * - Every request is counted and logged (the Authorization header is reduced
 *   to whether it was right).
 *
 * Plain Node `http`, so any test (Effect or not) can use it. Time for the
 * rate window comes from `now()` (real time by default).
 */
import { Effect } from "effect"
import { createHmac } from "node:crypto"
import { makePng } from "../support/images.ts"
import { paint, recolour } from "./Painter.ts"
import * as http from "node:http"
import type { AddressInfo, Socket } from "node:net"

// ---------------------------------------------------------------------------
// Scripts

/** An answer Kie gives instead of the normal one. */
export interface FakeError {
  readonly error: number
  readonly msg?: string
  /** HTTP status of the answer; 200 by default, like Kie often does. */
  readonly httpStatus?: number
}
/** Any body (a string is sent as is), e.g. a Cloudflare HTML page. */
export interface FakeRaw {
  readonly raw: unknown
  readonly httpStatus?: number
  readonly contentType?: string
}
/** Read the request, then never answer (until the server closes). */
export interface FakeHang {
  readonly hang: true
}
/** Read the request, then destroy the connection without answering. */
export interface FakeReset {
  readonly reset: true
}
/** Answer normally after a real delay. */
export interface FakeDelay {
  readonly delayMs: number
}

/**
 * What one createTask request gets. `hang`, `reset` and `delayMs` still
 * create (and bill) the task: the request reached Kie, only the answer is
 * lost or late, which is exactly the case a client must not retry blindly.
 */
export type FakeCreateStep = "ok" | FakeError | FakeRaw | FakeHang | FakeReset | FakeDelay

export type FakeTerminal =
  | { readonly success: ReadonlyArray<string> }
  | { readonly fail: { readonly code: string; readonly msg: string } }

/** What one recordInfo poll of a task sees. */
export type FakeTaskStep =
  | "null"
  | "waiting"
  | "queuing"
  | "generating"
  | FakeTerminal
  | FakeError
  | FakeRaw
  | FakeHang
  | FakeReset

export interface FakeTaskScript {
  /** One step per recordInfo poll; the last one repeats. */
  readonly steps: ReadonlyArray<FakeTaskStep>
  /** The state a callback reports; the last terminal step by default. */
  readonly final?: FakeTerminal
}

/** A success whose result this fake serves itself (see `/results/`). */
export const localResult = (name = "result.png"): FakeTerminal => ({ success: [`/results/${name}`] })

/** What one download of a result file gets. */
/** Answer once `until` settles (a gate the test opens). */
export interface FakeGate {
  readonly until: Promise<unknown>
}

export type FakeResultStep = "ok" | { readonly status: number } | FakeHang | FakeDelay | FakeGate

export const defaultTaskScript: FakeTaskScript = {
  steps: ["waiting", "generating", { success: ["https://tempfile.example/fake-result.png"] }]
}

export interface FakeKieOptions {
  readonly apiKey: string
  /** Signs callbacks when set. */
  readonly webhookHmacKey?: string
  /** Kie's account limit on accepted createTask requests; 20 per 10 s by default. */
  readonly createLimit?: { readonly count: number; readonly windowMs: number }
  readonly defaultTask?: FakeTaskScript
  /** POST the callback right after answering createTask. */
  readonly autoCallback?: boolean
  /** Epoch millis, for the rate window and callback timestamps. */
  readonly now?: () => number
  /** The bytes of every result file not set with `serveResult`; a 64×64 PNG by default. */
  readonly resultImage?: Buffer
  /**
   * Results are real pictures (see `Painter.ts`): painted from the prompt at
   * the ratio's size (`shortSide` pixels on the short side), or, for an edit,
   * the uploaded input recoloured. For the sandbox and the browser test.
   */
  readonly painter?: { readonly shortSide: number }
}

// ---------------------------------------------------------------------------
// Records

export interface FakeTask {
  readonly taskId: string
  readonly body: Record<string, any>
  readonly callBackUrl: string | undefined
  readonly createdAt: number
  readonly script: FakeTaskScript
  polls: number
  callbacksSent: number
}

export interface FakeRequest {
  readonly method: string
  readonly path: string
  readonly at: number
  readonly authorized: boolean
  readonly userAgent: string | undefined
  readonly contentType: string | undefined
  readonly body: string
}

export type CallKind = "createTask" | "recordInfo" | "result" | "upload" | "other"

export interface FakeCounters {
  /** createTask requests received, whatever the answer. */
  createTask: number
  /** Tasks created (billed): accepted createTask requests. */
  tasksCreated: number
  rateLimited: number
  unauthorized: number
  rejected422: number
  recordInfo: number
  /** Downloads of result files, whatever the answer. */
  result: number
  /** Upload requests (`/api/file-stream-upload`), whatever the answer. */
  upload: number
  other: number
  callbacksSent: number
}

export interface CallbackResult {
  readonly status: number
  readonly body: string
}

export interface SendCallbackOptions {
  /** Where to POST; the task's callBackUrl by default. */
  readonly url?: string
  /** Unix seconds for X-Webhook-Timestamp; from `now()` by default. */
  readonly timestamp?: number
  /** Replaces the computed signature (to test a bad one). */
  readonly signature?: string
  /** Signs with this key instead of the configured one. */
  readonly hmacKey?: string
  /** Leaves the signature headers out even when a key is set. */
  readonly unsigned?: boolean
  /** Reports this state instead of the task's final one. */
  readonly state?: FakeTerminal
  /** Replaces the whole body. */
  readonly body?: unknown
}

const ASPECT_RATIOS = ["1:1", "4:3", "3:4", "16:9", "9:16"]
const BANANA_RATIOS = ["1:1", "9:16", "16:9", "3:4", "4:3", "3:2", "2:3", "5:4", "4:5", "21:9", "auto"]
const SEEDREAM_RATIOS = ["1:1", "4:3", "3:4", "16:9", "9:16", "2:3", "3:2", "21:9"]
const FLUX_RATIOS = ["1:1", "4:3", "3:4", "16:9", "9:16", "3:2", "2:3"]
const QWEN_SIZES = ["square", "square_hd", "portrait_4_3", "portrait_16_9", "landscape_4_3", "landscape_16_9"]

/** What Kie's Market docs say one model's `input` takes (written from the docs, not from our catalog). */
interface FakeModel {
  readonly prompt: number
  /** The ratio field, its values, and whether it must be there. */
  readonly ratio: { readonly field: string; readonly values: ReadonlyArray<string>; readonly required: boolean }
  /** The picture field: an array of 1..max URLs, or one URL (`max: 1, single`). */
  readonly images?: { readonly field: string; readonly max: number; readonly single?: boolean }
  /** Other fields and the values they allow. */
  readonly extra?: Readonly<Record<string, ReadonlyArray<unknown>>>
}

/** The models this fake serves, as Kie documents their input. */
export const FAKE_MODELS: Readonly<Record<string, FakeModel>> = {
  "z-image": {
    prompt: 1000,
    ratio: { field: "aspect_ratio", values: ASPECT_RATIOS, required: true },
    extra: { nsfw_checker: [true, false] }
  },
  "google/nano-banana": {
    prompt: 5000,
    ratio: { field: "aspect_ratio", values: BANANA_RATIOS, required: false },
    extra: { output_format: ["png", "jpeg"] }
  },
  "google/nano-banana-edit": {
    prompt: 5000,
    ratio: { field: "aspect_ratio", values: BANANA_RATIOS, required: false },
    images: { field: "image_urls", max: 10 },
    extra: { output_format: ["png", "jpeg"] }
  },
  "seedream/4.5-text-to-image": {
    prompt: 3000,
    ratio: { field: "aspect_ratio", values: SEEDREAM_RATIOS, required: false },
    extra: { quality: ["basic", "high"] }
  },
  "seedream/4.5-edit": {
    prompt: 3000,
    ratio: { field: "aspect_ratio", values: SEEDREAM_RATIOS, required: false },
    images: { field: "image_urls", max: 14 },
    extra: { quality: ["basic", "high"] }
  },
  "flux-2/pro-text-to-image": {
    prompt: 5000,
    ratio: { field: "aspect_ratio", values: FLUX_RATIOS, required: false },
    extra: { resolution: ["1K", "2K"] }
  },
  "flux-2/pro-image-to-image": {
    prompt: 5000,
    ratio: { field: "aspect_ratio", values: FLUX_RATIOS, required: false },
    images: { field: "input_urls", max: 8 },
    extra: { resolution: ["1K", "2K"] }
  },
  "gpt-image/1.5-text-to-image": {
    prompt: 5000,
    ratio: { field: "aspect_ratio", values: ["1:1", "2:3", "3:2"], required: false },
    extra: { quality: ["medium", "high"] }
  },
  "google/imagen4-fast": {
    prompt: 5000,
    ratio: { field: "aspect_ratio", values: ASPECT_RATIOS, required: false },
    extra: { negative_prompt: [] }
  },
  "qwen/image-edit": {
    prompt: 2000,
    ratio: { field: "image_size", values: QWEN_SIZES, required: false },
    images: { field: "image_url", max: 1, single: true },
    extra: { num_images: ["1", "2", "3", "4"] }
  }
}

const isHttpUrl = (u: unknown) => typeof u === "string" && /^https?:\/\/\S+$/.test(u)

/** Why Kie would refuse `input` for `model` (a message naming the field), or `undefined`. */
const modelInputProblem = (id: string, input: Record<string, any>): string | undefined => {
  const model = FAKE_MODELS[id]!
  if (typeof input.prompt !== "string" || input.prompt.length === 0) return "input.prompt is required"
  if ([...input.prompt].length > model.prompt) return `input.prompt must be at most ${model.prompt} characters`
  const ratio = input[model.ratio.field]
  if (ratio === undefined ? model.ratio.required : !model.ratio.values.includes(ratio)) {
    return `input.${model.ratio.field} is invalid`
  }
  const images = model.images
  if (images !== undefined) {
    const value = input[images.field]
    const ok = images.single === true
      ? isHttpUrl(value)
      : Array.isArray(value) && value.length >= 1 && value.length <= images.max && value.every(isHttpUrl)
    if (!ok) return `input.${images.field} is invalid`
  }
  const known = new Set(["prompt", model.ratio.field, ...(images === undefined ? [] : [images.field])])
  for (const [field, value] of Object.entries(input)) {
    if (known.has(field)) continue
    const allowed = model.extra?.[field]
    if (allowed === undefined) return `input.${field} is not a parameter of ${id}`
    if (allowed.length > 0 && !allowed.includes(value)) return `input.${field} is invalid`
  }
  return undefined
}

/** The pixel size of a result for a ratio (or Qwen size name): `shortSide` (64) pixels on the short side. */
export const resultSizeFor = (
  ratio: unknown,
  shortSide = 64
): { readonly width: number; readonly height: number } => {
  const named: Record<string, string> = {
    square: "1:1",
    square_hd: "1:1",
    portrait_4_3: "3:4",
    portrait_16_9: "9:16",
    landscape_4_3: "4:3",
    landscape_16_9: "16:9"
  }
  const text = typeof ratio === "string" ? (named[ratio] ?? ratio) : "1:1"
  const match = /^(\d+):(\d+)$/.exec(text)
  if (match === null) return { width: shortSide, height: shortSide }
  const [w, h] = [Number(match[1]), Number(match[2])]
  return w >= h
    ? { width: Math.round((shortSide * w) / h), height: shortSide }
    : { width: shortSide, height: Math.round((shortSide * h) / w) }
}
let defaultImage: Buffer | undefined
const defaultResultImage = () => (defaultImage ??= makePng(64, 64))
const CALLBACK_TIMEOUT_MS = 10_000

const isTerminal = (step: FakeTaskStep): step is FakeTerminal =>
  typeof step === "object" && ("success" in step || "fail" in step)

export const signCallback = (key: string, taskId: string, timestamp: number | string): string =>
  createHmac("sha256", key).update(`${taskId}.${timestamp}`).digest("base64")

export class FakeKie {
  readonly options: FakeKieOptions
  readonly counters: FakeCounters = {
    createTask: 0,
    tasksCreated: 0,
    rateLimited: 0,
    unauthorized: 0,
    rejected422: 0,
    recordInfo: 0,
    result: 0,
    upload: 0,
    other: 0,
    callbacksSent: 0
  }
  /** Files uploaded, by id (`/uploads/<id>` serves them). */
  readonly uploads = new Map<
    string,
    { readonly bytes: Buffer; readonly fileName: string; readonly uploadPath: string }
  >()
  readonly requests: Array<FakeRequest> = []
  readonly tasks = new Map<string, FakeTask>()
  /** Arrival times of accepted createTask requests, for the sliding window. */
  readonly acceptedAt: Array<number> = []

  private server: http.Server
  private readonly sockets = new Set<Socket>()
  private readonly createSteps: Array<FakeCreateStep> = []
  private readonly recordInfoSteps: Array<FakeTaskStep> = []
  private readonly nextTaskScripts: Array<FakeTaskScript> = []
  private readonly taskScripts = new Map<string, FakeTaskScript>()
  private readonly resultFiles = new Map<string, Buffer>()
  private readonly resultSteps: Array<FakeResultStep> = []
  private readonly uploadSteps: Array<FakeError | FakeHang> = []
  private readonly waiters: Array<{ kind: CallKind; n: number; resolve: () => void }> = []
  private taskSeq = 0
  private listeningPort = 0
  /** Requests received and not answered yet, hung ones excepted. */
  private busy = 0
  /** Changes on every request arrival and every finished answer. */
  private activity = 0

  private constructor(options: FakeKieOptions) {
    this.options = options
    this.server = this.makeServer()
  }

  /** Starts a fake on 127.0.0.1 on a free port. */
  static async start(options: FakeKieOptions): Promise<FakeKie> {
    const fake = new FakeKie(options)
    await fake.listen(0)
    return fake
  }

  /** A fake for the life of the current scope. */
  static scoped(options: FakeKieOptions) {
    return Effect.acquireRelease(
      Effect.promise(() => FakeKie.start(options)),
      (fake) => Effect.promise(() => fake.close())
    )
  }

  get port(): number {
    return this.listeningPort
  }

  /** The base URL, for KIE_BASE_URL. */
  get url(): string {
    return `http://127.0.0.1:${this.listeningPort}`
  }

  now(): number {
    return this.options.now?.() ?? Date.now()
  }

  // -------------------------------------------------------------------------
  // Scripting

  /** Answers for the next createTask requests, one each, before normal ones. */
  scriptCreate(...steps: ReadonlyArray<FakeCreateStep>): this {
    this.createSteps.push(...steps)
    return this
  }

  /** Forgets the createTask answers scripted and not used yet. */
  clearCreateScript(): this {
    this.createSteps.length = 0
    return this
  }

  /** Answers for the next recordInfo requests (any task), before the task scripts. */
  scriptRecordInfo(...steps: ReadonlyArray<FakeTaskStep>): this {
    this.recordInfoSteps.push(...steps)
    return this
  }

  /** Scripts for the next created tasks, one each; then the default script. */
  scriptNextTasks(...scripts: ReadonlyArray<FakeTaskScript>): this {
    this.nextTaskScripts.push(...scripts)
    return this
  }

  /** The bytes served at `/results/<name>`. */
  serveResult(name: string, bytes: Buffer): this {
    this.resultFiles.set(name, bytes)
    return this
  }

  /** Answers for the next result downloads, one each, before normal ones. */
  scriptResults(...steps: ReadonlyArray<FakeResultStep>): this {
    this.resultSteps.push(...steps)
    return this
  }

  /** Answers for the next uploads, one each, before normal ones. */
  scriptUploads(...steps: ReadonlyArray<FakeError | FakeHang>): this {
    this.uploadSteps.push(...steps)
    return this
  }

  /** Deletes every uploaded file, as Kie does after a few days: their URLs answer 404. */
  expireUploads(): this {
    this.uploads.clear()
    return this
  }

  /** A result URL on this fake, as Kie would report it. */
  resultUrl(name = "result.png"): string {
    return `${this.url}/results/${name}`
  }

  /** The script of a task by id (also for ids the fake never created). */
  setTask(taskId: string, script: FakeTaskScript): this {
    this.taskScripts.set(taskId, script)
    const task = this.tasks.get(taskId)
    if (task !== undefined) this.tasks.set(taskId, { ...task, script, polls: 0 })
    return this
  }

  /** Creates a task directly, as if an earlier createTask had succeeded. */
  addTask(taskId: string, script: FakeTaskScript = this.options.defaultTask ?? defaultTaskScript): FakeTask {
    const task: FakeTask = {
      taskId,
      body: {},
      callBackUrl: undefined,
      createdAt: this.now(),
      script,
      polls: 0,
      callbacksSent: 0
    }
    this.tasks.set(taskId, task)
    return task
  }

  // -------------------------------------------------------------------------
  // Observation

  /** Resolves once `n` requests of `kind` arrived (counting earlier ones); rejects after `timeoutMs`. */
  waitForCalls(kind: CallKind, n: number, timeoutMs = 5_000): Promise<void> {
    if (this.callCount(kind) >= n) return Promise.resolve()
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        const i = this.waiters.findIndex((w) => w.resolve === done)
        if (i !== -1) this.waiters.splice(i, 1)
        reject(new Error(`FakeKie: waited ${timeoutMs} ms for ${n} ${kind} calls, saw ${this.callCount(kind)}`))
      }, timeoutMs)
      const done = () => {
        clearTimeout(timer)
        resolve()
      }
      this.waiters.push({ kind, n, resolve: done })
    })
  }

  /** `waitForCalls` as an Effect. */
  awaitCalls(kind: CallKind, n: number, timeoutMs = 5_000): Effect.Effect<void> {
    return Effect.promise(() => this.waitForCalls(kind, n, timeoutMs))
  }

  /**
   * Resolves once the fake has been idle for `quietMs`: no request being
   * answered (hung ones aside) and nothing new arriving. Lets a test that
   * drives a client with TestClock wait for the real I/O one clock step
   * started, instead of guessing a delay. Bounded by `timeoutMs`.
   */
  async idle(quietMs = 15, timeoutMs = 2_000): Promise<void> {
    const deadline = Date.now() + timeoutMs
    let seen = -1
    while (Date.now() < deadline) {
      if (this.busy === 0 && this.activity === seen) return
      seen = this.busy === 0 ? this.activity : -1
      await new Promise((resolve) => setTimeout(resolve, quietMs))
    }
  }

  callCount(kind: CallKind): number {
    return kind === "createTask"
      ? this.counters.createTask
      : kind === "recordInfo"
      ? this.counters.recordInfo
      : kind === "result"
      ? this.counters.result
      : kind === "upload"
      ? this.counters.upload
      : this.counters.other
  }

  // -------------------------------------------------------------------------
  // Callbacks

  /** The recordInfo `data` object of a task in a given state. */
  recordData(task: FakeTask, state: FakeTerminal | "waiting" | "queuing" | "generating"): Record<string, unknown> {
    const model = typeof task.body.model === "string" ? task.body.model : "z-image"
    const base = {
      taskId: task.taskId,
      model,
      param: JSON.stringify({
        model,
        ...(task.callBackUrl === undefined ? {} : { callBackUrl: task.callBackUrl }),
        input: JSON.stringify(task.body.input ?? {})
      }),
      createTime: task.createdAt,
      updateTime: this.now()
    }
    if (typeof state === "string") {
      return { ...base, state, resultJson: "", failCode: "", failMsg: "", costTime: null, completeTime: null }
    }
    if ("success" in state) {
      // A result this fake serves itself is sized by the task's ratio (`?task=`).
      const urls = state.success.map((url) =>
        url.startsWith("/") ? `${this.url}${url}${url.includes("?") ? "&" : "?"}task=${task.taskId}` : url
      )
      return {
        ...base,
        state: "success",
        resultJson: JSON.stringify({ resultUrls: urls }),
        failCode: "",
        failMsg: "",
        costTime: 12,
        completeTime: this.now(),
        successFlag: 1
      }
    }
    return {
      ...base,
      state: "fail",
      resultJson: "",
      failCode: state.fail.code,
      failMsg: state.fail.msg,
      costTime: 3,
      completeTime: this.now(),
      successFlag: 3
    }
  }

  finalState(task: FakeTask): FakeTerminal {
    if (task.script.final !== undefined) return task.script.final
    const terminal = task.script.steps.filter(isTerminal)
    return terminal[terminal.length - 1] ?? { success: ["https://tempfile.example/fake-result.png"] }
  }

  /** POSTs a Kie callback for a task; resolves with our server's answer. */
  async sendCallback(taskId: string, options: SendCallbackOptions = {}): Promise<CallbackResult> {
    const task = this.tasks.get(taskId) ?? this.addTask(taskId)
    const url = options.url ?? task.callBackUrl
    if (url === undefined) throw new Error(`FakeKie: task ${taskId} has no callBackUrl and no url was given`)
    const body = options.body ?? {
      code: 200,
      msg: "success",
      data: this.recordData(task, options.state ?? this.finalState(task))
    }
    const headers: Record<string, string> = { "content-type": "application/json", "user-agent": "FakeKie-Callback" }
    const key = options.hmacKey ?? this.options.webhookHmacKey
    if (key !== undefined && options.unsigned !== true) {
      const timestamp = options.timestamp ?? Math.floor(this.now() / 1000)
      headers["x-webhook-timestamp"] = String(timestamp)
      headers["x-webhook-signature"] = options.signature ?? signCallback(key, taskId, timestamp)
    } else if (options.signature !== undefined) {
      headers["x-webhook-signature"] = options.signature
      headers["x-webhook-timestamp"] = String(options.timestamp ?? Math.floor(this.now() / 1000))
    }
    task.callbacksSent++
    this.counters.callbacksSent++
    const response = await fetch(url, {
      method: "POST",
      headers,
      body: typeof body === "string" ? body : JSON.stringify(body),
      signal: AbortSignal.timeout(CALLBACK_TIMEOUT_MS)
    })
    return { status: response.status, body: await response.text() }
  }

  // -------------------------------------------------------------------------
  // Lifecycle

  /** Stops accepting connections (clients get ECONNREFUSED) and drops open ones. */
  async stopListening(): Promise<void> {
    for (const socket of this.sockets) socket.destroy()
    await new Promise<void>((resolve) => this.server.close(() => resolve()))
  }

  /** Listens again on the same port after `stopListening`. */
  async resumeListening(): Promise<void> {
    this.server = this.makeServer()
    await this.listen(this.listeningPort)
  }

  async close(): Promise<void> {
    for (const socket of this.sockets) socket.destroy()
    if (this.server.listening) await new Promise<void>((resolve) => this.server.close(() => resolve()))
  }

  // -------------------------------------------------------------------------
  // Server

  private listen(port: number): Promise<void> {
    return new Promise((resolve, reject) => {
      this.server.once("error", reject)
      this.server.listen(port, "127.0.0.1", () => {
        this.server.off("error", reject)
        this.listeningPort = (this.server.address() as AddressInfo).port
        resolve()
      })
    })
  }

  private makeServer(): http.Server {
    const server = http.createServer((req, res) => {
      this.busy++
      this.activity++
      let done = false
      const finish = () => {
        if (done) return
        done = true
        this.busy--
        this.activity++
      }
      res.on("finish", finish)
      res.on("close", finish)
      ;(res as any).markHung = finish
      const chunks: Array<Buffer> = []
      req.on("data", (chunk: Buffer) => chunks.push(chunk))
      req.on("end", () => this.handle(req, res, Buffer.concat(chunks)))
    })
    server.on("connection", (socket) => {
      this.sockets.add(socket)
      socket.on("close", () => this.sockets.delete(socket))
    })
    return server
  }

  private count(kind: CallKind) {
    if (kind === "createTask") this.counters.createTask++
    else if (kind === "recordInfo") this.counters.recordInfo++
    else if (kind === "result") this.counters.result++
    else if (kind === "upload") this.counters.upload++
    else this.counters.other++
    const n = this.callCount(kind)
    for (let i = this.waiters.length - 1; i >= 0; i--) {
      const waiter = this.waiters[i]!
      if (waiter.kind === kind && n >= waiter.n) {
        this.waiters.splice(i, 1)
        waiter.resolve()
      }
    }
  }

  private handle(req: http.IncomingMessage, res: http.ServerResponse, raw: Buffer) {
    const body = raw.toString("utf8")
    const url = new URL(req.url ?? "/", "http://127.0.0.1")
    const authorized = req.headers.authorization === `Bearer ${this.options.apiKey}`
    this.requests.push({
      method: req.method ?? "",
      path: url.pathname + url.search,
      at: this.now(),
      authorized,
      userAgent: req.headers["user-agent"],
      contentType: req.headers["content-type"],
      body
    })
    const kind: CallKind = req.method === "POST" && url.pathname === "/api/v1/jobs/createTask"
      ? "createTask"
      : req.method === "GET" && url.pathname === "/api/v1/jobs/recordInfo"
      ? "recordInfo"
      : req.method === "GET" && (url.pathname.startsWith("/results/") || url.pathname.startsWith("/uploads/"))
      ? "result"
      : req.method === "POST" && url.pathname === "/api/file-stream-upload"
      ? "upload"
      : "other"
    this.count(kind)
    // The file host needs no key, like Kie's temporary URLs.
    if (kind === "result" && url.pathname.startsWith("/uploads/")) {
      const file = this.uploads.get(decodeURIComponent(url.pathname.slice("/uploads/".length)))
      if (file === undefined) return this.reply(res, 404, "Not Found", "text/plain")
      res.writeHead(200, { "content-type": "application/octet-stream", "content-length": file.bytes.length })
      return res.end(file.bytes)
    }
    if (kind === "result") {
      const name = decodeURIComponent(url.pathname.slice("/results/".length))
      return this.result(res, name, url.searchParams.get("task") ?? undefined)
    }
    if (kind === "other") return this.reply(res, 404, { code: 404, msg: "Not Found", data: null })
    if (!authorized) {
      this.counters.unauthorized++
      return this.reply(res, 200, { code: 401, msg: "You do not have access permissions", data: null })
    }
    if (kind === "createTask") return this.createTask(req, res, body)
    if (kind === "upload") return void this.upload(req, res, raw)
    return this.recordInfo(res, url.searchParams.get("taskId"))
  }

  private reply(res: http.ServerResponse, status: number, body: unknown, contentType = "application/json") {
    if (res.destroyed) return
    res.writeHead(status, { "content-type": contentType })
    res.end(typeof body === "string" ? body : JSON.stringify(body))
  }

  private answerError(res: http.ServerResponse, step: FakeError) {
    this.reply(res, step.httpStatus ?? 200, { code: step.error, msg: step.msg ?? `error ${step.error}`, data: null })
  }

  private answerRaw(res: http.ServerResponse, step: FakeRaw) {
    this.reply(res, step.httpStatus ?? 200, step.raw, step.contentType ?? "application/json")
  }

  private validateCreate(body: string): string | Record<string, any> {
    let parsed: any
    try {
      parsed = JSON.parse(body)
    } catch {
      return "request body is not JSON"
    }
    if (typeof parsed !== "object" || parsed === null) return "request body must be an object"
    if (typeof parsed.model !== "string" || FAKE_MODELS[parsed.model] === undefined) return "model is not supported"
    const input = parsed.input
    if (typeof input !== "object" || input === null || Array.isArray(input)) return "input must be an object"
    const problem = modelInputProblem(parsed.model, input)
    if (problem !== undefined) return problem
    if (parsed.callBackUrl !== undefined && typeof parsed.callBackUrl !== "string") return "callBackUrl is invalid"
    return parsed
  }

  private createTask(req: http.IncomingMessage, res: http.ServerResponse, body: string) {
    const step = this.createSteps.shift() ?? "ok"
    if (step !== "ok" && "error" in step) return this.answerError(res, step)
    if (step !== "ok" && "raw" in step) return this.answerRaw(res, step)
    const valid = this.validateCreate(body)
    if (typeof valid === "string") {
      this.counters.rejected422++
      return this.reply(res, 200, { code: 422, msg: valid, data: null })
    }
    const now = this.now()
    const { count, windowMs } = this.options.createLimit ?? { count: 20, windowMs: 10_000 }
    while (this.acceptedAt.length > 0 && this.acceptedAt[0]! <= now - windowMs) this.acceptedAt.shift()
    if (this.acceptedAt.length >= count) {
      this.counters.rateLimited++
      return this.reply(res, 200, { code: 429, msg: "Rate limit exceeded", data: null })
    }
    this.acceptedAt.push(now)
    this.counters.tasksCreated++
    const taskId = `task_${String(valid.model).replace(/[^a-z0-9-]/gi, "-")}_${now}${
      String(++this.taskSeq).padStart(4, "0")
    }`
    const script = this.nextTaskScripts.shift() ?? this.options.defaultTask ?? defaultTaskScript
    const task: FakeTask = {
      taskId,
      body: valid,
      callBackUrl: valid.callBackUrl,
      createdAt: now,
      script,
      polls: 0,
      callbacksSent: 0
    }
    this.tasks.set(taskId, task)
    const answer = () => {
      this.reply(res, 200, { code: 200, msg: "success", data: { taskId, recordId: `rec_${this.taskSeq}` } })
      if (this.options.autoCallback === true && task.callBackUrl !== undefined) {
        this.sendCallback(taskId).catch(() => undefined)
      }
    }
    if (step === "ok") return answer()
    if ("hang" in step) return (res as any).markHung()
    if ("reset" in step) return req.socket.destroy()
    setTimeout(answer, step.delayMs)
  }

  /** The bytes of a result: set with `serveResult`, else sized by the task's ratio, else the default image. */
  private resultBytes(name: string, taskId: string | undefined): Buffer {
    const served = this.resultFiles.get(name) ?? this.options.resultImage
    if (served !== undefined) return served
    const input = taskId === undefined ? undefined : this.tasks.get(taskId)?.body.input
    if (input === undefined) return defaultResultImage()
    const ratio = input.aspect_ratio ?? input.image_size
    if (this.options.painter === undefined) {
      const size = resultSizeFor(ratio)
      return makePng(size.width, size.height)
    }
    const size = resultSizeFor(ratio, this.options.painter.shortSide)
    const prompt = typeof input.prompt === "string" ? input.prompt : ""
    const uploaded = this.uploadedInput(taskId!)
    return uploaded === undefined ? paint(prompt, size.width, size.height) : recolour(uploaded, prompt, size)
  }

  /** The bytes of a task's first input picture, when this fake holds it (uploaded, or a result it made). */
  private uploadedInput(taskId: string): Buffer | undefined {
    const task = this.tasks.get(taskId)
    const field = FAKE_MODELS[String(task?.body.model)]?.images?.field
    if (task === undefined || field === undefined) return undefined
    const value: unknown = task.body.input?.[field]
    const first = Array.isArray(value) ? value[0] : value
    if (typeof first !== "string" || !first.startsWith(`${this.url}/`)) return undefined
    const url = new URL(first)
    if (url.pathname.startsWith("/uploads/")) {
      return this.uploads.get(decodeURIComponent(url.pathname.slice("/uploads/".length)))?.bytes
    }
    // An edit of a picture this fake made (a reply to a delivered picture): that picture.
    const earlier = url.searchParams.get("task") ?? undefined
    if (!url.pathname.startsWith("/results/") || earlier === undefined || earlier === taskId) return undefined
    return this.resultBytes(decodeURIComponent(url.pathname.slice("/results/".length)), earlier)
  }

  /** Kie's stream upload: multipart `file`, `uploadPath`, `fileName`; answers `data.downloadUrl` on this fake. */
  private async upload(req: http.IncomingMessage, res: http.ServerResponse, raw: Buffer) {
    const step = this.uploadSteps.shift()
    if (step !== undefined && "hang" in step) return (res as any).markHung()
    if (step !== undefined) return this.answerError(res, step)
    let form: FormData
    try {
      const request = new Request("http://fake.local/", {
        method: "POST",
        headers: { "content-type": String(req.headers["content-type"]) },
        body: raw
      })
      // oxlint-disable-next-line typescript/no-deprecated -- our own test uploads
      form = await request.formData()
    } catch {
      return this.reply(res, 200, { code: 400, msg: "multipart body expected", data: null })
    }
    const file = form.get("file")
    const uploadPath = form.get("uploadPath")
    const fileName = form.get("fileName")
    if (typeof file === "string" || file === null)
      return this.reply(res, 200, { code: 400, msg: "file is required", data: null })
    if (typeof uploadPath !== "string" || uploadPath === "") {
      return this.reply(res, 200, { code: 400, msg: "uploadPath is required", data: null })
    }
    const id = `${this.uploads.size + 1}-${typeof fileName === "string" ? fileName : file.name}`
    const bytes = Buffer.from(await file.arrayBuffer())
    this.uploads.set(id, { bytes, fileName: typeof fileName === "string" ? fileName : file.name, uploadPath })
    this.reply(res, 200, {
      code: 200,
      msg: "File uploaded successfully",
      data: {
        fileName: id,
        filePath: `${uploadPath}/${id}`,
        downloadUrl: `${this.url}/uploads/${id}`,
        fileSize: bytes.length
      }
    })
  }

  private result(res: http.ServerResponse, name: string, taskId?: string) {
    const step = this.resultSteps.shift() ?? "ok"
    if (step !== "ok" && "hang" in step) return (res as any).markHung()
    if (step !== "ok" && "delayMs" in step) {
      setTimeout(() => this.result(res, name, taskId), step.delayMs)
      return
    }
    if (step !== "ok" && "until" in step) {
      // Not "busy" while held: `idle()` must not wait for the gate.
      ;(res as any).markHung()
      void step.until.finally(() => this.result(res, name, taskId))
      return
    }
    if (step !== "ok") {
      res.writeHead(step.status, { "content-type": "text/plain" })
      return res.end(`status ${step.status}`)
    }
    const bytes = this.resultBytes(name, taskId)
    res.writeHead(200, { "content-type": "image/png", "content-length": bytes.length })
    res.end(bytes)
  }

  private recordInfo(res: http.ServerResponse, taskId: string | null) {
    if (taskId === null || taskId === "")
      return this.reply(res, 200, { code: 400, msg: "taskId parameter is required", data: null })
    const scripted = this.recordInfoSteps.shift()
    let task = this.tasks.get(taskId)
    if (task === undefined) {
      const script = this.taskScripts.get(taskId)
      if (script === undefined && scripted === undefined) {
        return this.reply(res, 200, { code: 404, msg: "Task not found", data: null })
      }
      task = this.addTask(taskId, script)
    }
    const step = scripted ?? task.script.steps[Math.min(task.polls, task.script.steps.length - 1)] ?? "waiting"
    if (scripted === undefined) task.polls++
    if (step === "null") return this.reply(res, 200, { code: 422, msg: "recordInfo is null", data: null })
    if (typeof step === "string")
      return this.reply(res, 200, { code: 200, msg: "success", data: this.recordData(task, step) })
    if (isTerminal(step)) return this.reply(res, 200, { code: 200, msg: "success", data: this.recordData(task, step) })
    if ("error" in step) return this.answerError(res, step)
    if ("raw" in step) return this.answerRaw(res, step)
    if ("hang" in step) return (res as any).markHung()
    res.socket?.destroy()
  }
}
