// Marina test peer: a standard MCP server (official TypeScript SDK, Streamable HTTP) that
// implements the naming contract of the MCP conformance suite
// (@modelcontextprotocol/conformance 0.1.16, server scenarios): tools test_*, resources
// test://..., prompts test_*, completion, logging, progress, sampling, elicitation, resource
// subscriptions and SEP-1699 stream close / resume.
//
// Plain ESM JavaScript, so it runs on Node >= 20 without a build step.
//
//   PORT=0 node server.mjs        -> prints "upstream listening on http://127.0.0.1:<port>/mcp"
//
// Endpoints (127.0.0.1 only):
//   /mcp            stateful sessions (Mcp-Session-Id), SSE responses, per-session in-memory event
//                   store (Last-Event-ID resume, also of streams that are still running),
//                   `retry:` hint on priming events, standalone GET stream, DELETE.
//   /mcp-stateless  no sessions, plain JSON responses (enableJsonResponse); no server-to-client
//                   requests or streamed notifications there.
//   /health         200 "ok".
// Every request must carry a localhost Host header (and Origin, if present) -> else 403
// (DNS-rebinding protection). More host names: ALLOWED_HOSTS=a,b.
//
// Env: PORT (default 0 = any free port), RETRY_INTERVAL_MS (SSE retry hint, default 1000),
// WATCH_INTERVAL_MS (test://watched-resource update period while subscribed, default 1000),
// SESSION_IDLE_MS (idle sessions are closed, default 1800000), UPSTREAM_DEBUG=1 (log transport
// errors to stderr).

import { randomUUID } from 'node:crypto';
import http from 'node:http';

import { Server } from '@modelcontextprotocol/sdk/server/index.js';
import { StreamableHTTPServerTransport } from '@modelcontextprotocol/sdk/server/streamableHttp.js';
import {
  CallToolRequestSchema,
  CompleteRequestSchema,
  CreateMessageResultSchema,
  ElicitResultSchema,
  ErrorCode,
  GetPromptRequestSchema,
  LATEST_PROTOCOL_VERSION,
  ListPromptsRequestSchema,
  ListResourcesRequestSchema,
  ListResourceTemplatesRequestSchema,
  ListToolsRequestSchema,
  ReadResourceRequestSchema,
  SUPPORTED_PROTOCOL_VERSIONS,
  SubscribeRequestSchema,
  UnsubscribeRequestSchema,
  isInitializeRequest,
} from '@modelcontextprotocol/sdk/types.js';
import { z } from 'zod';

const SERVER_INFO = { name: 'marina-upstream-peer', version: '0.1.0' };

const envInt = (name, dflt) => {
  const raw = process.env[name];
  if (raw === undefined || raw === '') return dflt;
  const n = Number(raw);
  if (!Number.isInteger(n) || n < 0) {
    process.stderr.write(`upstream: invalid ${name}=${raw}\n`);
    process.exit(64);
  }
  return n;
};
const PORT = envInt('PORT', 0);
const RETRY_INTERVAL_MS = envInt('RETRY_INTERVAL_MS', 1000);
const WATCH_INTERVAL_MS = Math.max(50, envInt('WATCH_INTERVAL_MS', 1000));
const SESSION_IDLE_MS = envInt('SESSION_IDLE_MS', 30 * 60 * 1000);
const DEBUG = !!process.env.UPSTREAM_DEBUG;
const MAX_BODY_BYTES = 4 * 1024 * 1024;
const MAX_EVENTS_PER_STREAM = 1000;

const debug = (...args) => {
  if (DEBUG) process.stderr.write(`upstream: ${args.join(' ')}\n`);
};
const sleep = ms => new Promise(resolve => setTimeout(resolve, ms));

// A JSON-RPC error for a request handler to throw. (McpError would prefix its message with
// "MCP error <code>: " on the wire.)
const rpcError = (code, message, data) => Object.assign(new Error(message), { code, data });

// ---------------------------------------------------------------------------------------------
// Fixtures

// 1x1 red pixel, RGBA PNG.
const RED_PIXEL_PNG =
  'iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8DwHwAFBQIAX8jx0gAAAABJRU5ErkJggg==';

// 100 ms of silence: RIFF/WAVE, PCM, mono, 8 kHz, 8 bit.
const SILENT_WAV = (() => {
  const rate = 8000;
  const samples = rate / 10;
  const b = Buffer.alloc(44 + samples, 0x80); // 0x80 = silence for unsigned 8-bit PCM
  b.write('RIFF', 0, 'ascii');
  b.writeUInt32LE(36 + samples, 4);
  b.write('WAVE', 8, 'ascii');
  b.write('fmt ', 12, 'ascii');
  b.writeUInt32LE(16, 16); // fmt chunk size
  b.writeUInt16LE(1, 20); // PCM
  b.writeUInt16LE(1, 22); // channels
  b.writeUInt32LE(rate, 24); // sample rate
  b.writeUInt32LE(rate, 28); // byte rate
  b.writeUInt16LE(1, 32); // block align
  b.writeUInt16LE(8, 34); // bits per sample
  b.write('data', 36, 'ascii');
  b.writeUInt32LE(samples, 40);
  return b.toString('base64');
})();

const text = t => ({ type: 'text', text: t });
const EMPTY_OBJECT_SCHEMA = { type: 'object', properties: {} };

// ---------------------------------------------------------------------------------------------
// Event store (one per session): resumability for POST and GET streams.
//
// Events are stored per stream in order, also while the stream is disconnected (the SDK stores
// before writing), so a client resuming with Last-Event-ID gets everything it missed and then
// the live tail of a still-running stream. Priming events (empty message) are never replayed.

class InMemoryEventStore {
  #seq = 0;
  #streamOf = new Map(); // eventId -> streamId
  #streams = new Map(); // streamId -> [{ seq, eventId, message }]

  async storeEvent(streamId, message) {
    const seq = ++this.#seq;
    const eventId = `${streamId}/${seq}`;
    let events = this.#streams.get(streamId);
    if (!events) this.#streams.set(streamId, (events = []));
    events.push({ seq, eventId, message });
    this.#streamOf.set(eventId, streamId);
    if (events.length > MAX_EVENTS_PER_STREAM) {
      const dropped = events.shift();
      this.#streamOf.delete(dropped.eventId);
    }
    return eventId;
  }

  async getStreamIdForEventId(eventId) {
    return this.#streamOf.get(eventId);
  }

  async replayEventsAfter(lastEventId, { send }) {
    const streamId = this.#streamOf.get(lastEventId);
    if (streamId === undefined) throw new Error(`unknown event id ${lastEventId}`);
    const after = Number(lastEventId.slice(lastEventId.lastIndexOf('/') + 1));
    for (const { seq, eventId, message } of [...(this.#streams.get(streamId) ?? [])]) {
      if (seq <= after || Object.keys(message).length === 0) continue;
      await send(eventId, message);
    }
    return streamId;
  }
}

// ---------------------------------------------------------------------------------------------
// Tools

// Sends a request to the client on the tools/call POST stream (relatedRequestId), after
// checking the client declared the capability.
async function askClient(server, extra, capability, request, resultSchema) {
  if (!server.getClientCapabilities()?.[capability]) {
    return { error: `Client does not support ${capability} (required for ${request.method})` };
  }
  return { result: await extra.sendRequest(request, resultSchema) };
}

const TOOLS = [
  {
    name: 'test_simple_text',
    description: 'Returns a simple text content block.',
    inputSchema: EMPTY_OBJECT_SCHEMA,
    run: async () => ({ content: [text('This is a simple text response for testing.')] }),
  },
  {
    name: 'test_image_content',
    description: 'Returns an image content block (1x1 red PNG).',
    inputSchema: EMPTY_OBJECT_SCHEMA,
    run: async () => ({ content: [{ type: 'image', data: RED_PIXEL_PNG, mimeType: 'image/png' }] }),
  },
  {
    name: 'test_audio_content',
    description: 'Returns an audio content block (100 ms of silence, WAV).',
    inputSchema: EMPTY_OBJECT_SCHEMA,
    run: async () => ({ content: [{ type: 'audio', data: SILENT_WAV, mimeType: 'audio/wav' }] }),
  },
  {
    name: 'test_embedded_resource',
    description: 'Returns an embedded text resource.',
    inputSchema: EMPTY_OBJECT_SCHEMA,
    run: async () => ({
      content: [
        {
          type: 'resource',
          resource: {
            uri: 'test://embedded-resource',
            mimeType: 'text/plain',
            text: 'This is an embedded resource content.',
          },
        },
      ],
    }),
  },
  {
    name: 'test_multiple_content_types',
    description: 'Returns text, image and embedded resource content blocks.',
    inputSchema: EMPTY_OBJECT_SCHEMA,
    run: async () => ({
      content: [
        text('Multiple content types test:'),
        { type: 'image', data: RED_PIXEL_PNG, mimeType: 'image/png' },
        {
          type: 'resource',
          resource: {
            uri: 'test://mixed-content-resource',
            mimeType: 'application/json',
            text: JSON.stringify({ test: 'data', value: 123 }),
          },
        },
      ],
    }),
  },
  {
    name: 'test_tool_with_logging',
    description: 'Sends three info log notifications (50 ms apart) while it runs.',
    inputSchema: EMPTY_OBJECT_SCHEMA,
    run: async (_args, extra, server) => {
      const log = async data => {
        if (server.isMessageIgnored('info', extra.sessionId)) return;
        await extra.sendNotification({
          method: 'notifications/message',
          params: { level: 'info', logger: 'test_tool_with_logging', data },
        });
      };
      await log('Tool execution started');
      await sleep(50);
      await log('Tool processing data');
      await sleep(50);
      await log('Tool execution completed');
      return { content: [text('Tool with logging executed successfully')] };
    },
  },
  {
    name: 'test_error_handling',
    description: 'Always fails with a tool error (isError: true).',
    inputSchema: EMPTY_OBJECT_SCHEMA,
    run: async () => ({
      isError: true,
      content: [text('This tool intentionally returns an error for testing')],
    }),
  },
  {
    name: 'test_tool_with_progress',
    description: 'Reports progress 0, 50, 100 of 100 (50 ms apart) when given a progressToken.',
    inputSchema: EMPTY_OBJECT_SCHEMA,
    run: async (_args, extra) => {
      const progressToken = extra._meta?.progressToken;
      for (const [i, progress] of [0, 50, 100].entries()) {
        if (i > 0) await sleep(50);
        if (progressToken !== undefined) {
          await extra.sendNotification({
            method: 'notifications/progress',
            params: { progressToken, progress, total: 100, message: `step ${i + 1} of 3` },
          });
        }
      }
      return { content: [text('Tool with progress executed successfully')] };
    },
  },
  {
    name: 'test_sampling',
    description: 'Asks the client for an LLM completion (sampling/createMessage) of the prompt.',
    inputSchema: {
      type: 'object',
      properties: { prompt: { type: 'string', description: 'The prompt to send to the LLM' } },
      required: ['prompt'],
    },
    args: z.object({ prompt: z.string() }),
    run: async ({ prompt }, extra, server) => {
      const { error, result } = await askClient(
        server,
        extra,
        'sampling',
        {
          method: 'sampling/createMessage',
          params: { messages: [{ role: 'user', content: text(prompt) }], maxTokens: 100 },
        },
        CreateMessageResultSchema,
      );
      if (error) return { isError: true, content: [text(error)] };
      const reply = result.content?.type === 'text' ? result.content.text : JSON.stringify(result.content);
      return { content: [text(`LLM response: ${reply}`)] };
    },
  },
  {
    name: 'test_elicitation',
    description: 'Asks the user (elicitation/create) for a username and an email address.',
    inputSchema: {
      type: 'object',
      properties: { message: { type: 'string', description: 'The message to show the user' } },
      required: ['message'],
    },
    args: z.object({ message: z.string() }),
    run: async ({ message }, extra, server) =>
      elicit(server, extra, message, {
        type: 'object',
        properties: {
          username: { type: 'string', description: "User's response" },
          email: { type: 'string', description: "User's email address" },
        },
        required: ['username', 'email'],
      }, 'User response'),
  },
  {
    name: 'test_elicitation_sep1034_defaults',
    description: 'Elicitation whose schema has default values for every primitive type (SEP-1034).',
    inputSchema: EMPTY_OBJECT_SCHEMA,
    run: async (_args, extra, server) =>
      elicit(server, extra, 'Please review your profile (defaults are pre-filled)', {
        type: 'object',
        properties: {
          name: { type: 'string', description: 'User name', default: 'John Doe' },
          age: { type: 'integer', description: 'User age', default: 30 },
          score: { type: 'number', description: 'User score', default: 95.5 },
          status: {
            type: 'string',
            description: 'User status',
            enum: ['active', 'inactive', 'pending'],
            default: 'active',
          },
          verified: { type: 'boolean', description: 'Verification status', default: true },
        },
        required: [],
      }),
  },
  {
    name: 'test_elicitation_sep1330_enums',
    description: 'Elicitation using all five enum schema variants (SEP-1330).',
    inputSchema: EMPTY_OBJECT_SCHEMA,
    run: async (_args, extra, server) =>
      elicit(server, extra, 'Please pick some options', {
        type: 'object',
        properties: {
          untitledSingle: {
            type: 'string',
            description: 'Untitled single-select',
            enum: ['option1', 'option2', 'option3'],
          },
          titledSingle: {
            type: 'string',
            description: 'Titled single-select',
            oneOf: [
              { const: 'value1', title: 'First Option' },
              { const: 'value2', title: 'Second Option' },
              { const: 'value3', title: 'Third Option' },
            ],
          },
          legacyEnum: {
            type: 'string',
            description: 'Legacy titled single-select (deprecated enumNames)',
            enum: ['opt1', 'opt2', 'opt3'],
            enumNames: ['Option One', 'Option Two', 'Option Three'],
          },
          untitledMulti: {
            type: 'array',
            description: 'Untitled multi-select',
            items: { type: 'string', enum: ['option1', 'option2', 'option3'] },
          },
          titledMulti: {
            type: 'array',
            description: 'Titled multi-select',
            items: {
              anyOf: [
                { const: 'value1', title: 'First Choice' },
                { const: 'value2', title: 'Second Choice' },
                { const: 'value3', title: 'Third Choice' },
              ],
            },
          },
        },
        required: [],
      }),
  },
  {
    name: 'test_reconnection',
    description:
      'Closes its own SSE response stream mid-call (SEP-1699), then completes; the client ' +
      'resumes with GET + Last-Event-ID and receives the result.',
    inputSchema: EMPTY_OBJECT_SCHEMA,
    run: async (_args, extra) => {
      await sleep(50);
      // Only offered by the SDK when the stream is resumable (event store, protocol >= 2025-11-25).
      const closed = typeof extra.closeSSEStream === 'function';
      if (closed) extra.closeSSEStream();
      await sleep(200);
      return {
        content: [
          text(
            closed
              ? 'Reconnection test completed successfully: the response stream was closed mid-call and this result was delivered after the client resumed.'
              : 'Reconnection test completed successfully (stream not closed: not resumable).',
          ),
        ],
      };
    },
  },
  {
    name: 'json_schema_2020_12_tool',
    description: 'Tool with JSON Schema 2020-12 features',
    inputSchema: {
      $schema: 'https://json-schema.org/draft/2020-12/schema',
      type: 'object',
      $defs: {
        address: {
          type: 'object',
          properties: { street: { type: 'string' }, city: { type: 'string' } },
        },
      },
      properties: {
        name: { type: 'string' },
        address: { $ref: '#/$defs/address' },
      },
      additionalProperties: false,
    },
    args: z
      .object({
        name: z.string().optional(),
        address: z.object({ street: z.string().optional(), city: z.string().optional() }).optional(),
      })
      .strict(),
    run: async args => ({ content: [text(`Received: ${JSON.stringify(args)}`)] }),
  },
  {
    // Not part of the conformance contract (handled in the tools/call handler, which has the
    // session's state): adds or removes the tool `marina_extra` and the prompt
    // `marina_extra_prompt` for this session and says so with tools/ and prompts/list_changed.
    name: 'marina_toggle_extra',
    description: 'Adds or removes the tool marina_extra and the prompt marina_extra_prompt.',
    inputSchema: EMPTY_OBJECT_SCHEMA,
  },
  {
    // Not part of the conformance contract: lets Marina's tests see an upstream withdraw its own
    // request (the SDK sends notifications/cancelled when a request times out).
    name: 'marina_elicitation_withdrawn',
    description: 'Asks the user something, gives up after timeout_ms and withdraws the question.',
    inputSchema: { type: 'object', properties: { timeout_ms: { type: 'integer', minimum: 1 } } },
    args: z.object({ timeout_ms: z.number().int().positive().optional() }),
    run: async ({ timeout_ms = 300 }, extra) => {
      const request = {
        method: 'elicitation/create',
        params: { message: 'Still there?', requestedSchema: { type: 'object', properties: {} } },
      };
      try {
        await extra.sendRequest(request, ElicitResultSchema, { timeout: timeout_ms });
        return { content: [text('answered')] };
      } catch (e) {
        return { content: [text(`withdrawn: ${e.message}`)] };
      }
    },
  },
];
const TOOLS_BY_NAME = new Map(TOOLS.map(t => [t.name, t]));

async function elicit(server, extra, message, requestedSchema, label = 'Elicitation completed') {
  const { error, result } = await askClient(
    server,
    extra,
    'elicitation',
    { method: 'elicitation/create', params: { message, requestedSchema } },
    ElicitResultSchema,
  );
  if (error) return { isError: true, content: [text(error)] };
  return {
    content: [text(`${label}: action=${result.action}, content=${JSON.stringify(result.content ?? {})}`)],
  };
}

// ---------------------------------------------------------------------------------------------
// Resources and prompts

const STATIC_RESOURCES = [
  {
    uri: 'test://static-text',
    name: 'static-text',
    title: 'Static text resource',
    description: 'A static text resource for testing',
    mimeType: 'text/plain',
    read: () => ({ text: 'This is the content of the static text resource.' }),
  },
  {
    uri: 'test://static-binary',
    name: 'static-binary',
    title: 'Static binary resource',
    description: 'A static binary resource (1x1 red PNG) for testing',
    mimeType: 'image/png',
    read: () => ({ blob: RED_PIXEL_PNG }),
  },
  {
    uri: 'test://watched-resource',
    name: 'watched-resource',
    title: 'Watched resource',
    description: 'Changes periodically while subscribed (notifications/resources/updated)',
    mimeType: 'text/plain',
    read: ctx => ({ text: `Watched resource content, version ${ctx.watchedVersion}` }),
  },
];
const TEMPLATE = {
  uriTemplate: 'test://template/{id}/data',
  name: 'template-data',
  title: 'Templated data resource',
  description: 'A resource template; the id is substituted into the content',
  mimeType: 'application/json',
};
const TEMPLATE_RE = /^test:\/\/template\/([^/]+)\/data$/;

const PROMPTS = [
  {
    name: 'test_simple_prompt',
    description: 'A simple prompt without arguments',
    get: () => [{ role: 'user', content: text('This is a simple prompt for testing.') }],
  },
  {
    name: 'test_prompt_with_arguments',
    description: 'A prompt with two required arguments',
    arguments: [
      { name: 'arg1', description: 'First test argument', required: true },
      { name: 'arg2', description: 'Second test argument', required: true },
    ],
    get: a => [{ role: 'user', content: text(`Prompt with arguments: arg1='${a.arg1}', arg2='${a.arg2}'`) }],
  },
  {
    name: 'test_prompt_with_embedded_resource',
    description: 'A prompt that embeds a resource',
    arguments: [{ name: 'resourceUri', description: 'URI of the resource to embed', required: true }],
    get: a => [
      {
        role: 'user',
        content: {
          type: 'resource',
          resource: { uri: a.resourceUri, mimeType: 'text/plain', text: 'Embedded resource content for testing.' },
        },
      },
      { role: 'user', content: text('Please process the embedded resource above.') },
    ],
  },
  {
    name: 'test_prompt_with_image',
    description: 'A prompt with image content',
    get: () => [
      { role: 'user', content: { type: 'image', data: RED_PIXEL_PNG, mimeType: 'image/png' } },
      { role: 'user', content: text('Please analyze the image above.') },
    ],
  },
];
const PROMPTS_BY_NAME = new Map(PROMPTS.map(p => [p.name, p]));

const COMPLETIONS = {
  'ref/prompt:test_prompt_with_arguments:arg1': ['paris', 'park', 'party', 'test', 'testValue1'],
  'ref/prompt:test_prompt_with_arguments:arg2': ['london', 'lisbon', 'test', 'testValue2'],
  [`ref/resource:${TEMPLATE.uriTemplate}:id`]: ['1', '2', '3', '123'],
};

// ---------------------------------------------------------------------------------------------
// MCP server (one per session; ctx is the per-session state)

function createMcpServer(ctx) {
  const server = new Server(SERVER_INFO, {
    capabilities: {
      tools: { listChanged: true },
      resources: { subscribe: true },
      prompts: { listChanged: true },
      logging: {},
      completions: {},
    },
    instructions: 'Test MCP server implementing the MCP conformance suite naming contract.',
  });

  const EXTRA_TOOL = { name: 'marina_extra', description: 'Present while toggled on.', inputSchema: EMPTY_OBJECT_SCHEMA };
  const EXTRA_PROMPT = { name: 'marina_extra_prompt', description: 'Present while toggled on.' };

  server.setRequestHandler(ListToolsRequestSchema, async () => ({
    tools: [
      ...TOOLS.map(({ name, description, inputSchema }) => ({ name, description, inputSchema })),
      ...(ctx.extra ? [EXTRA_TOOL] : []),
    ],
  }));

  server.setRequestHandler(CallToolRequestSchema, async (request, extra) => {
    if (request.params.name === 'marina_toggle_extra') {
      ctx.extra = !ctx.extra;
      // No related request: both go to the standalone GET stream.
      await server.sendToolListChanged();
      await server.sendPromptListChanged();
      return { content: [text(ctx.extra ? 'extra on' : 'extra off')] };
    }
    if (request.params.name === EXTRA_TOOL.name && ctx.extra) return { content: [text('extra')] };
    const tool = TOOLS_BY_NAME.get(request.params.name);
    if (!tool) throw rpcError(ErrorCode.InvalidParams, `Unknown tool: ${request.params.name}`);
    let args = request.params.arguments ?? {};
    if (tool.args) {
      const parsed = tool.args.safeParse(args);
      if (!parsed.success) {
        return {
          isError: true,
          content: [text(`Invalid arguments for ${tool.name}: ${z.prettifyError(parsed.error)}`)],
        };
      }
      args = parsed.data;
    }
    return tool.run(args, extra, server);
  });

  server.setRequestHandler(ListResourcesRequestSchema, async () => ({
    resources: STATIC_RESOURCES.map(({ read: _read, ...r }) => r),
  }));

  server.setRequestHandler(ListResourceTemplatesRequestSchema, async () => ({
    resourceTemplates: [TEMPLATE],
  }));

  server.setRequestHandler(ReadResourceRequestSchema, async request => {
    const { uri } = request.params;
    const res = STATIC_RESOURCES.find(r => r.uri === uri);
    if (res) return { contents: [{ uri, mimeType: res.mimeType, ...res.read(ctx) }] };
    const m = TEMPLATE_RE.exec(uri);
    if (m) {
      const id = decodeURIComponent(m[1]);
      return {
        contents: [
          {
            uri,
            mimeType: 'application/json',
            text: JSON.stringify({ id, templateTest: true, data: `Data for ID: ${id}` }),
          },
        ],
      };
    }
    throw rpcError(-32002, `Resource not found: ${uri}`, { uri });
  });

  server.setRequestHandler(SubscribeRequestSchema, async request => {
    ctx.subscribe(request.params.uri);
    return {};
  });

  server.setRequestHandler(UnsubscribeRequestSchema, async request => {
    ctx.unsubscribe(request.params.uri);
    return {};
  });

  server.setRequestHandler(ListPromptsRequestSchema, async () => ({
    prompts: [
      ...PROMPTS.map(({ name, description, arguments: a }) => ({
        name,
        description,
        ...(a ? { arguments: a } : {}),
      })),
      ...(ctx.extra ? [EXTRA_PROMPT] : []),
    ],
  }));

  server.setRequestHandler(GetPromptRequestSchema, async request => {
    const prompt = PROMPTS_BY_NAME.get(request.params.name);
    if (!prompt) throw rpcError(ErrorCode.InvalidParams, `Unknown prompt: ${request.params.name}`);
    const args = request.params.arguments ?? {};
    const missing = (prompt.arguments ?? []).filter(a => a.required && typeof args[a.name] !== 'string');
    if (missing.length > 0) {
      throw rpcError(
        ErrorCode.InvalidParams,
        `Missing required argument(s) for ${prompt.name}: ${missing.map(a => a.name).join(', ')}`,
      );
    }
    return { description: prompt.description, messages: prompt.get(args) };
  });

  server.setRequestHandler(CompleteRequestSchema, async request => {
    const { ref, argument } = request.params;
    const key = ref.type === 'ref/prompt' ? `ref/prompt:${ref.name}` : `ref/resource:${ref.uri}`;
    const known = ref.type === 'ref/prompt' ? PROMPTS_BY_NAME.has(ref.name) : ref.uri === TEMPLATE.uriTemplate;
    if (!known) throw rpcError(ErrorCode.InvalidParams, `Unknown completion reference: ${key}`);
    const prefix = (argument.value ?? '').toLowerCase();
    const values = (COMPLETIONS[`${key}:${argument.name}`] ?? []).filter(v => v.toLowerCase().startsWith(prefix));
    return { completion: { values: values.slice(0, 100), total: values.length, hasMore: false } };
  });

  return server;
}

// Per-session state: resource subscriptions and the watched-resource ticker.
function createSessionContext() {
  const ctx = {
    server: undefined,
    subscriptions: new Set(),
    extra: false, // marina_toggle_extra
    watchedVersion: 1,
    timer: undefined,
    lastSeen: Date.now(),
    subscribe(uri) {
      ctx.subscriptions.add(uri);
      if (uri === 'test://watched-resource' && !ctx.timer) {
        ctx.timer = setInterval(() => {
          ctx.watchedVersion += 1;
          // No related request: goes to the standalone GET stream (stored while it is absent).
          ctx.server
            ?.sendResourceUpdated({ uri: 'test://watched-resource' })
            .catch(err => debug('resources/updated:', err.message));
        }, WATCH_INTERVAL_MS);
        ctx.timer.unref();
      }
    },
    unsubscribe(uri) {
      ctx.subscriptions.delete(uri);
      if (uri === 'test://watched-resource' && ctx.timer) {
        clearInterval(ctx.timer);
        ctx.timer = undefined;
      }
    },
    dispose() {
      if (ctx.timer) clearInterval(ctx.timer);
      ctx.timer = undefined;
      ctx.subscriptions.clear();
    },
  };
  return ctx;
}

// ---------------------------------------------------------------------------------------------
// HTTP

const LOCAL_HOSTNAMES = new Set(['localhost', '127.0.0.1', '[::1]']);
for (const h of (process.env.ALLOWED_HOSTS ?? '').split(',')) {
  if (h.trim()) LOCAL_HOSTNAMES.add(h.trim().toLowerCase());
}

function hostnameOf(hostHeader) {
  try {
    return new URL(`http://${hostHeader}`).hostname.toLowerCase();
  } catch {
    return undefined;
  }
}

// DNS-rebinding protection: Host must name this machine; Origin, if sent, too.
function checkHostAndOrigin(req) {
  const host = req.headers.host;
  if (!host || !LOCAL_HOSTNAMES.has(hostnameOf(host))) return `Invalid Host header: ${host ?? '(none)'}`;
  const origin = req.headers.origin;
  if (origin !== undefined) {
    let ok = false;
    try {
      const u = new URL(origin);
      ok = (u.protocol === 'http:' || u.protocol === 'https:') && LOCAL_HOSTNAMES.has(u.hostname.toLowerCase());
    } catch {
      ok = false;
    }
    if (!ok) return `Invalid Origin header: ${origin}`;
  }
  return undefined;
}

function sendJsonRpcError(res, status, code, message, headers = {}) {
  if (res.headersSent) {
    res.end();
    return;
  }
  res.writeHead(status, { 'Content-Type': 'application/json', ...headers });
  res.end(JSON.stringify({ jsonrpc: '2.0', error: { code, message }, id: null }));
}

function readJsonBody(req) {
  return new Promise(resolve => {
    const chunks = [];
    let size = 0;
    let tooLarge = false;
    req.on('data', chunk => {
      size += chunk.length;
      if (size > MAX_BODY_BYTES) tooLarge = true;
      else chunks.push(chunk);
    });
    req.on('end', () => {
      if (tooLarge) return resolve({ status: 413, message: 'Payload Too Large' });
      const raw = Buffer.concat(chunks).toString('utf8');
      try {
        resolve({ body: JSON.parse(raw) });
      } catch {
        resolve({ status: 400, code: -32700, message: 'Parse error: Invalid JSON' });
      }
    });
    req.on('error', () => resolve({ status: 400, message: 'Bad Request' }));
  });
}

// Sets a request header for the SDK transport (which reads IncomingMessage.rawHeaders).
function overrideHeader(req, name, value) {
  const lower = name.toLowerCase();
  for (let i = 0; i < req.rawHeaders.length; i += 2) {
    if (req.rawHeaders[i].toLowerCase() === lower) req.rawHeaders[i + 1] = value;
  }
  req.headers[lower] = value;
}

/** sessionId -> { transport, server, ctx, protocolVersion } */
const sessions = new Map();

function newTransport(ctx, { stateless = false } = {}) {
  const transport = stateless
    ? new StreamableHTTPServerTransport({ sessionIdGenerator: undefined, enableJsonResponse: true })
    : new StreamableHTTPServerTransport({
        sessionIdGenerator: () => randomUUID(),
        eventStore: new InMemoryEventStore(),
        retryInterval: RETRY_INTERVAL_MS,
        onsessioninitialized: id => {
          sessions.set(id, ctx.session);
        },
      });
  transport.onerror = err => debug('transport:', err.message);
  return transport;
}

async function handleStateful(req, res) {
  const sid = req.headers['mcp-session-id'];
  if (req.method === 'POST') {
    const parsed = await readJsonBody(req);
    if (parsed.status) return sendJsonRpcError(res, parsed.status, parsed.code ?? -32000, parsed.message);
    const body = parsed.body;
    if (sid !== undefined) {
      const session = sessions.get(sid);
      if (!session) return sendJsonRpcError(res, 404, -32001, 'Session not found');
      session.ctx.lastSeen = Date.now();
      // The SDK decides whether to send SSE priming events (and whether a handler may close
      // its stream for polling) from this request's MCP-Protocol-Version header. Decide from
      // the version negotiated for the session instead, when the header names an older one.
      const hv = req.headers['mcp-protocol-version'];
      if (typeof hv === 'string' && SUPPORTED_PROTOCOL_VERSIONS.includes(hv) && hv < session.protocolVersion) {
        overrideHeader(req, 'mcp-protocol-version', session.protocolVersion);
      }
      return session.transport.handleRequest(req, res, body);
    }
    const isInit = Array.isArray(body) ? body.some(isInitializeRequest) : isInitializeRequest(body);
    if (!isInit) {
      return sendJsonRpcError(res, 400, -32000, 'Bad Request: Mcp-Session-Id header is required');
    }
    const ctx = createSessionContext();
    const server = createMcpServer(ctx);
    ctx.server = server;
    const transport = newTransport(ctx);
    const init = Array.isArray(body) ? body.find(isInitializeRequest) : body;
    const requested = init.params.protocolVersion;
    ctx.session = {
      transport,
      server,
      ctx,
      protocolVersion: SUPPORTED_PROTOCOL_VERSIONS.includes(requested) ? requested : LATEST_PROTOCOL_VERSION,
    };
    transport.onclose = () => {
      ctx.dispose();
      if (transport.sessionId && sessions.get(transport.sessionId) === ctx.session) {
        sessions.delete(transport.sessionId);
      }
    };
    await server.connect(transport);
    await transport.handleRequest(req, res, body);
    if (!transport.sessionId) await server.close(); // initialization was rejected
    return undefined;
  }
  if (req.method === 'GET' || req.method === 'DELETE') {
    if (sid === undefined) {
      return sendJsonRpcError(res, 400, -32000, 'Bad Request: Mcp-Session-Id header is required');
    }
    const session = sessions.get(sid);
    if (!session) return sendJsonRpcError(res, 404, -32001, 'Session not found');
    session.ctx.lastSeen = Date.now();
    return session.transport.handleRequest(req, res);
  }
  return sendJsonRpcError(res, 405, -32000, 'Method not allowed.', { Allow: 'GET, POST, DELETE' });
}

async function handleStateless(req, res) {
  if (req.method !== 'POST') {
    return sendJsonRpcError(res, 405, -32000, 'Method not allowed.', { Allow: 'POST' });
  }
  const parsed = await readJsonBody(req);
  if (parsed.status) return sendJsonRpcError(res, parsed.status, parsed.code ?? -32000, parsed.message);
  const ctx = createSessionContext();
  const server = createMcpServer(ctx);
  const transport = newTransport(ctx, { stateless: true });
  res.on('close', () => {
    ctx.dispose();
    transport.close().catch(() => {});
    server.close().catch(() => {});
  });
  await server.connect(transport);
  await transport.handleRequest(req, res, parsed.body);
  return undefined;
}

const httpServer = http.createServer((req, res) => {
  const path = (req.url ?? '/').split('?')[0];
  const invalid = checkHostAndOrigin(req);
  if (invalid) {
    debug('rejected:', invalid);
    return sendJsonRpcError(res, 403, -32000, `Forbidden: ${invalid}`);
  }
  let handler;
  if (path === '/mcp') handler = handleStateful;
  else if (path === '/mcp-stateless') handler = handleStateless;
  else if (path === '/health' && (req.method === 'GET' || req.method === 'HEAD')) {
    res.writeHead(200, { 'Content-Type': 'text/plain' });
    return res.end('ok\n');
  } else {
    res.writeHead(404, { 'Content-Type': 'text/plain' });
    return res.end('not found\n');
  }
  handler(req, res).catch(err => {
    debug('handler:', err.stack ?? err.message);
    sendJsonRpcError(res, 500, -32603, 'Internal server error');
  });
  return undefined;
});

// Close sessions nobody has used for SESSION_IDLE_MS (clients rarely send DELETE).
const sweeper = setInterval(() => {
  const cutoff = Date.now() - SESSION_IDLE_MS;
  for (const session of sessions.values()) {
    if (session.ctx.lastSeen < cutoff) session.transport.close().catch(() => {});
  }
}, Math.min(60_000, Math.max(1000, SESSION_IDLE_MS)));
sweeper.unref();

let stopping = false;
function shutdown() {
  if (stopping) return;
  stopping = true;
  for (const session of sessions.values()) {
    session.ctx.dispose();
    session.transport.close().catch(() => {});
  }
  httpServer.close();
  httpServer.closeAllConnections();
  setImmediate(() => process.exit(0));
}
process.on('SIGTERM', shutdown);
process.on('SIGINT', shutdown);

httpServer.listen(PORT, '127.0.0.1', () => {
  const { port } = httpServer.address();
  process.stdout.write(`upstream listening on http://127.0.0.1:${port}/mcp\n`);
});
