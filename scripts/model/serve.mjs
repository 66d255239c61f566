// The local model route: a small OpenAI-compatible HTTP server over a prebuilt llama.cpp
// (node-llama-cpp), serving one GGUF model file. Started by scripts/model/serve.
//
//   GET  /health               {"status": "ok", "model": ...} (no token: a readiness probe)
//   GET  /v1/models            the one model, with the sha256 of its file
//   POST /v1/chat/completions  messages, temperature, max_tokens, seed, stop, and
//                              response_format {type: "json_schema", json_schema: {schema}}
//                              (grammar-constrained output) or {type: "json_object"}
//
// `usage` carries prompt_tokens, completion_tokens and prompt_tokens_details.cached_tokens. The
// cached count is the runtime's own: prompt tokens minus the input tokens llama.cpp actually
// evaluated for this call (its token meter); the rest were reused from the KV cache of the
// previous call (the stable governance prefix), never estimated.
//
// One request is evaluated at a time, on one context sequence (so consecutive calls share their
// common prefix), with the thread count given (1 by default: two threads collapse under
// contention on a 2-core machine). Temperature 0 is greedy, hence deterministic.
//
// Security: binds 127.0.0.1 unless --listen says otherwise; every endpoint but /health needs
// `Authorization: Bearer <key>`, the key read from the environment variable named by --key-env
// (default RATCHET_MODEL_KEY); without it the server refuses to start unless --open is given.
// Prints `RATCHET_LISTENING http://<addr>/v1` on stdout once it serves, like Ratchet's agents.

import http from "node:http";
import crypto from "node:crypto";
import fs from "node:fs";
import {getLlama, LlamaChat} from "node-llama-cpp";

function parseArgs(argv) {
    const opts = {listen: "127.0.0.1:0", threads: 1, ctx: 8192, keyEnv: "RATCHET_MODEL_KEY", open: false, maxTokens: 256};
    for (let i = 0; i < argv.length; i++) {
        const a = argv[i];
        const next = () => {
            if (i + 1 >= argv.length) fail(`${a} needs a value`);
            return argv[++i];
        };
        if (a === "--model-file") opts.modelFile = next();
        else if (a === "--name") opts.name = next();
        else if (a === "--listen") opts.listen = next();
        else if (a === "--port") opts.listen = `127.0.0.1:${next()}`;
        else if (a === "--threads") opts.threads = Number(next());
        else if (a === "--ctx") opts.ctx = Number(next());
        else if (a === "--max-tokens") opts.maxTokens = Number(next());
        else if (a === "--key-env") opts.keyEnv = next();
        else if (a === "--open") opts.open = true;
        else fail(`unknown argument ${a}; known: --model-file --name --listen --port --threads --ctx --max-tokens --key-env --open`);
    }
    if (!opts.modelFile) fail("--model-file is required (scripts/model/serve passes the installed model)");
    if (!opts.name) opts.name = opts.modelFile.split("/").pop().replace(/\.gguf$/, "");
    for (const k of ["threads", "ctx", "maxTokens"]) {
        if (!Number.isInteger(opts[k]) || opts[k] < 1) fail(`--${k} must be a positive integer`);
    }
    return opts;
}

function fail(msg) {
    process.stderr.write(`model server: ${msg}\n`);
    process.exit(2);
}

const opts = parseArgs(process.argv.slice(2));
const key = process.env[opts.keyEnv] || "";
if (!key && !opts.open) {
    fail(`${opts.keyEnv} is unset: every endpoint but /health requires a bearer token; set ${opts.keyEnv} (scripts/model/serve makes one), or pass --open to serve without one on loopback`);
}
const [host, portText] = opts.listen.includes(":") ? [opts.listen.slice(0, opts.listen.lastIndexOf(":")), opts.listen.slice(opts.listen.lastIndexOf(":") + 1)] : ["127.0.0.1", opts.listen];
if (opts.open && !["127.0.0.1", "localhost", "::1"].includes(host)) fail("--open serves without a token: loopback only");

const fileSha256 = crypto.createHash("sha256").update(fs.readFileSync(opts.modelFile)).digest("hex");
const started = Date.now();
const llama = await getLlama({gpu: false, build: "never", logLevel: "error"});
const model = await llama.loadModel({modelPath: opts.modelFile});
const context = await model.createContext({contextSize: Math.min(opts.ctx, model.trainContextSize), threads: opts.threads, sequences: 1});
const sequence = context.getSequence();
const chat = new LlamaChat({contextSequence: sequence});
const loadMs = Date.now() - started;

const grammars = new Map();
async function grammarFor(responseFormat) {
    if (!responseFormat || responseFormat.type === "text") return undefined;
    let schema;
    if (responseFormat.type === "json_schema") {
        schema = responseFormat.json_schema && responseFormat.json_schema.schema;
        if (!schema || typeof schema !== "object") throw new BadRequest("response_format.json_schema.schema must be a JSON schema object");
    } else if (responseFormat.type === "json_object") {
        schema = null;
    } else {
        throw new BadRequest(`response_format.type ${JSON.stringify(responseFormat.type)} is not supported; use text, json_object or json_schema`);
    }
    const cacheKey = JSON.stringify(schema);
    if (!grammars.has(cacheKey)) {
        try {
            grammars.set(cacheKey, schema === null ? await llama.getGrammarFor("json") : await llama.createGrammarForJsonSchema(schema));
        } catch (e) {
            throw new BadRequest(`this server cannot constrain output to that schema: ${e.message}`);
        }
    }
    return grammars.get(cacheKey);
}

class BadRequest extends Error {}

function history(messages) {
    if (!Array.isArray(messages) || messages.length === 0) throw new BadRequest("messages must be a non-empty array");
    const text = (m) => {
        if (typeof m.content === "string") return m.content;
        if (Array.isArray(m.content)) return m.content.filter((p) => p && p.type === "text").map((p) => p.text).join("");
        throw new BadRequest("a message's content must be a string or an array of text parts");
    };
    const out = [];
    for (const m of messages) {
        if (!m || typeof m !== "object") throw new BadRequest("each message must be an object");
        if (m.role === "system" || m.role === "developer") {
            const last = out[out.length - 1];
            if (last && last.type === "system") last.text += "\n" + text(m);
            else out.push({type: "system", text: text(m)});
        } else if (m.role === "user") out.push({type: "user", text: text(m)});
        else if (m.role === "assistant") out.push({type: "model", response: [text(m)]});
        else throw new BadRequest(`message role ${JSON.stringify(m.role)} is not supported; use system, user or assistant`);
    }
    out.push({type: "model", response: []});
    return out;
}

let calls = 0;
let queue = Promise.resolve();
function serialized(fn) {
    const run = queue.then(fn, fn);
    queue = run.catch(() => {});
    return run;
}

async function complete(body) {
    const chatHistory = history(body.messages);
    const maxTokens = body.max_completion_tokens ?? body.max_tokens ?? opts.maxTokens;
    if (!Number.isInteger(maxTokens) || maxTokens < 1) throw new BadRequest("max_tokens must be a positive integer");
    const temperature = body.temperature ?? 0;
    if (typeof temperature !== "number" || temperature < 0 || temperature > 2) throw new BadRequest("temperature must be a number in [0, 2]");
    const stop = body.stop == null ? [] : Array.isArray(body.stop) ? body.stop : [body.stop];
    if (!stop.every((s) => typeof s === "string")) throw new BadRequest("stop must be a string or an array of strings");
    const grammar = await grammarFor(body.response_format);
    return serialized(async () => {
        const promptTokens = chat.chatWrapper.generateContextState({chatHistory}).contextText.tokenize(model.tokenizer).length;
        if (promptTokens + maxTokens > context.contextSize) {
            throw new BadRequest(`the prompt (${promptTokens} tokens) plus max_tokens (${maxTokens}) exceeds the context of ${context.contextSize} tokens`);
        }
        const before = sequence.tokenMeter.getState();
        const t0 = performance.now();
        const r = await chat.generateResponse(chatHistory, {
            maxTokens,
            temperature,
            seed: body.seed ?? undefined,
            grammar,
            customStopTriggers: stop.length ? stop : undefined,
        });
        const latencyMs = performance.now() - t0;
        const used = sequence.tokenMeter.diff(before);
        // The prompt tokens llama.cpp evaluated for this call, from its token meter: the meter
        // counts a decoded token as "output" when it yields logits, so the last prompt token
        // (decoded together with the first sampling) is among the output count; the rest of the
        // prompt was already in the sequence's KV cache (the common prefix with the last call).
        const evaluatedPrompt = Math.min(promptTokens, used.usedInputTokens + (used.usedOutputTokens > 0 ? 1 : 0));
        const cached = promptTokens - evaluatedPrompt;
        calls += 1;
        return {
            id: `chatcmpl-${started}-${calls}`,
            object: "chat.completion",
            created: Math.floor(Date.now() / 1000),
            model: opts.name,
            choices: [{
                index: 0,
                message: {role: "assistant", content: r.response},
                finish_reason: r.metadata.stopReason === "maxTokens" ? "length" : "stop",
            }],
            usage: {
                prompt_tokens: promptTokens,
                completion_tokens: used.usedOutputTokens,
                total_tokens: promptTokens + used.usedOutputTokens,
                prompt_tokens_details: {cached_tokens: cached},
            },
            timings: {latency_ms: Math.round(latencyMs), evaluated_prompt_tokens: evaluatedPrompt},
        };
    });
}

function send(res, status, value) {
    const text = JSON.stringify(value);
    res.writeHead(status, {"content-type": "application/json", "content-length": Buffer.byteLength(text)});
    res.end(text);
}

function error(res, status, message, type) {
    send(res, status, {error: {message, type, code: status}});
}

function authorized(req) {
    if (opts.open) return true;
    const got = Buffer.from((req.headers.authorization || "").replace(/^Bearer\s+/i, ""));
    const want = Buffer.from(key);
    return got.length === want.length && crypto.timingSafeEqual(got, want);
}

const MAX_BODY = 4 * 1024 * 1024;
const server = http.createServer((req, res) => {
    const path = (req.url || "/").split("?")[0];
    if (req.method === "GET" && path === "/health") {
        return send(res, 200, {status: "ok", model: opts.name, load_ms: loadMs});
    }
    if (!authorized(req)) return error(res, 401, `missing or wrong bearer token (the server's key is in ${opts.keyEnv})`, "authentication_error");
    if (req.method === "GET" && path === "/v1/models") {
        return send(res, 200, {object: "list", data: [{id: opts.name, object: "model", owned_by: "local", file_sha256: fileSha256, context: context.contextSize}]});
    }
    if (req.method !== "POST" || path !== "/v1/chat/completions") return error(res, 404, `no route ${req.method} ${path}`, "not_found");
    const chunks = [];
    let size = 0;
    req.on("data", (c) => {
        size += c.length;
        if (size > MAX_BODY) {
            error(res, 413, `request body over ${MAX_BODY} bytes`, "invalid_request_error");
            req.destroy();
        } else chunks.push(c);
    });
    req.on("end", async () => {
        if (size > MAX_BODY) return;
        let body;
        try {
            body = JSON.parse(Buffer.concat(chunks).toString("utf8"));
        } catch (e) {
            return error(res, 400, `the body is not JSON: ${e.message}`, "invalid_request_error");
        }
        if (body.stream) return error(res, 400, "stream is not supported by this server; send stream: false", "invalid_request_error");
        if (body.model && body.model !== opts.name) return error(res, 404, `model ${JSON.stringify(body.model)} is not served here; this server serves ${JSON.stringify(opts.name)}`, "not_found");
        try {
            send(res, 200, await complete(body));
        } catch (e) {
            if (e instanceof BadRequest) error(res, 400, e.message, "invalid_request_error");
            else error(res, 500, `the model failed: ${e.message}`, "server_error");
        }
    });
});

server.listen(Number(portText), host, () => {
    const a = server.address();
    const shown = a.family === "IPv6" ? `[${a.address}]` : a.address;
    process.stdout.write(`RATCHET_LISTENING http://${shown}:${a.port}/v1\n`);
    process.stderr.write(`model server: ${opts.name} (${opts.modelFile}, sha256 ${fileSha256.slice(0, 12)}) loaded in ${loadMs} ms; ${opts.threads} thread(s), context ${context.contextSize}\n`);
});

for (const sig of ["SIGTERM", "SIGINT"]) {
    process.on(sig, () => {
        server.close();
        process.exit(0);
    });
}
