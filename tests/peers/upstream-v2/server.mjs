// Marina test peer: a standard MCP server on the official TypeScript SDK v2
// (@modelcontextprotocol/server 2.4.0) that serves BOTH protocol eras on one endpoint and
// implements the tool/resource/prompt contract of the MCP conformance suite
// (@modelcontextprotocol/conformance 0.2.0-alpha.12, server scenarios of
// `--requirements 2026-07-28` and `--requirements 2025-11-25`).
//
// Plain ESM JavaScript, so it runs on Node >= 20 without a build step.
//
//   PORT=0 node server.mjs        -> prints "upstream listening on http://127.0.0.1:<port>/mcp"
//
// Endpoints (127.0.0.1 only):
//   /mcp            2026-07-28 (stateless: per-request `_meta` envelope, server/discover,
//                   `resultType`, input_required multi round-trip, subscriptions/listen,
//                   Mcp-Method/Mcp-Name header checks) through the SDK's createMcpHandler
//                   (legacy: 'reject'), and 2025-era traffic (initialize, Mcp-Session-Id, SSE,
//                   per-session event store with Last-Event-ID resume, standalone GET stream,
//                   DELETE) through a sessionful WebStandardStreamableHTTPServerTransport.
//                   The split is the SDK's own predicate, isLegacyRequest().
//   /mcp-stateless  the SDK's createMcpHandler with its default legacy posture: 2026-07-28 as
//                   above, 2025-era requests answered statelessly (no sessions; GET/DELETE 405).
//   /health         200 "ok".
// Every request must carry a localhost Host header (and Origin, if present) -> else 403
// (DNS-rebinding protection). More host names: ALLOWED_HOSTS=a,b.
//
// Tools that need the client's input (elicitation, sampling, roots) are written once, in the
// 2026-07-28 "write-once" style: they return inputRequired({ inputRequests, requestState }) until
// the retried request carries `inputResponses`. On 2026-07-28 requests the client sees
// `resultType: "input_required"` and retries; on a 2025-era session the SDK's legacy shim sends
// each embedded request as a real server->client request (elicitation/create,
// sampling/createMessage, roots/list) on the tools/call SSE stream and re-enters the handler.
//
// Env: PORT (default 0 = any free port), RETRY_INTERVAL_MS (SSE retry hint on 2025 sessions,
// default 1000), WATCH_INTERVAL_MS (test://watched-resource update period, default 1000),
// SESSION_IDLE_MS (idle 2025 sessions are closed, default 1800000), REQUEST_STATE_KEY (HMAC key
// for requestState, >= 32 bytes; default: random per process), UPSTREAM_DEBUG=1 (log SDK errors
// to stderr).

import { randomBytes, randomUUID } from 'node:crypto';
import http from 'node:http';

import {
  CLIENT_CAPABILITIES_META_KEY,
  McpServer,
  ProtocolError,
  ProtocolErrorCode,
  ResourceTemplate,
  WebStandardStreamableHTTPServerTransport,
  acceptedContent,
  createMcpHandler,
  createRequestStateCodec,
  fromJsonSchema,
  inputRequired,
  isInitializeRequest,
  isLegacyRequest,
} from '@modelcontextprotocol/server';
import { z } from 'zod';

const SERVER_INFO = { name: 'marina-upstream-v2-peer', version: '0.1.0' };

const envInt = (name, dflt) => {
  const raw = process.env[name];
  if (raw === undefined || raw === '') return dflt;
  const n = Number(raw);
  if (!Number.isInteger(n) || n < 0) {
    process.stderr.write(`upstream-v2: invalid ${name}=${raw}\n`);
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
  if (DEBUG) process.stderr.write(`upstream-v2: ${args.join(' ')}\n`);
};
const onerror = err => debug('sdk:', err?.stack ?? err?.message ?? String(err));
const sleep = ms => new Promise(resolve => setTimeout(resolve, ms));

// requestState integrity (SEP-2322): HMAC-sealed by the SDK's codec, verified by the server seam
// before a handler is re-entered (tampered or expired state -> -32602). Every 2026-07-28 request
// gets a fresh server instance, so the state is all that survives between rounds.
const REQUEST_STATE_KEY = process.env.REQUEST_STATE_KEY || randomBytes(32);
if (typeof REQUEST_STATE_KEY === 'string' && Buffer.byteLength(REQUEST_STATE_KEY) < 32) {
  process.stderr.write('upstream-v2: REQUEST_STATE_KEY must be at least 32 bytes\n');
  process.exit(64);
}
const requestStateCodec = createRequestStateCodec({ key: REQUEST_STATE_KEY });

// ---------------------------------------------------------------------------------------------
// Fixtures

// 1x1 red pixel, RGBA PNG.
const RED_PIXEL_PNG =
  'iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8DwHwAFBQIAX8jx0gAAAABJRU5ErkJggg==';

// 100 ms of silence: RIFF/WAVE, PCM, mono, 8 kHz, 8 bit.
const SILENT_WAV = (() => {
  const rate = 8000;
  const samples = rate / 10;
  const b = Buffer.alloc(44 + samples, 0x80);
  b.write('RIFF', 0, 'ascii');
  b.writeUInt32LE(36 + samples, 4);
  b.write('WAVE', 8, 'ascii');
  b.write('fmt ', 12, 'ascii');
  b.writeUInt32LE(16, 16);
  b.writeUInt16LE(1, 20);
  b.writeUInt16LE(1, 22);
  b.writeUInt32LE(rate, 24);
  b.writeUInt32LE(rate, 28);
  b.writeUInt16LE(1, 32);
  b.writeUInt16LE(8, 34);
  b.write('data', 36, 'ascii');
  b.writeUInt32LE(samples, 40);
  return b.toString('base64');
})();

const text = t => ({ type: 'text', text: t });
const NO_ARGS = () => fromJsonSchema({ type: 'object', properties: {} });
const WATCHED_URI = 'test://watched-resource';

const elicitForm = (message, properties, required = Object.keys(properties)) =>
  inputRequired.elicit({ message, requestedSchema: { type: 'object', properties, required } });

// ---------------------------------------------------------------------------------------------
// Shared state
//
// 2025-era sessions each have a scope (resource subscriptions, the marina_toggle_extra switch).
// 2026-07-28 requests are served by per-request instances, so they share one global scope and
// their change notifications go out on subscriptions/listen streams via the handler's bus.

const globalScope = { extra: false, watchedVersion: 1 };
let handlers; // { strict, stateless }: set below, used by the trigger tools

// ---------------------------------------------------------------------------------------------
// The MCP server definition: one factory for both eras.

function createMcpServer(scope = globalScope) {
  const mcpServer = new McpServer(SERVER_INFO, {
    capabilities: {
      tools: { listChanged: true },
      resources: { subscribe: true, listChanged: true },
      prompts: { listChanged: true },
      // Deprecated in 2026-07-28 (per-request _meta logLevel instead); kept for 2025 sessions.
      logging: {},
      completions: {},
    },
    instructions: 'Test MCP server (TypeScript SDK v2) implementing the MCP conformance suite contract.',
    requestState: { verify: requestStateCodec.verify },
  });
  const server = mcpServer.server;
  const tool = (name, description, inputSchema, run) =>
    mcpServer.registerTool(name, { description, inputSchema: inputSchema ?? NO_ARGS() }, run);

  // --- plain content tools --------------------------------------------------------------------

  tool('test_simple_text', 'Returns a simple text content block.', null, async () => ({
    content: [text('This is a simple text response for testing.')],
  }));
  tool('test_image_content', 'Returns an image content block (1x1 red PNG).', null, async () => ({
    content: [{ type: 'image', data: RED_PIXEL_PNG, mimeType: 'image/png' }],
  }));
  tool('test_audio_content', 'Returns an audio content block (100 ms of silence, WAV).', null, async () => ({
    content: [{ type: 'audio', data: SILENT_WAV, mimeType: 'audio/wav' }],
  }));
  tool('test_embedded_resource', 'Returns an embedded text resource.', null, async () => ({
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
  }));
  tool('test_multiple_content_types', 'Returns text, image and embedded resource content blocks.', null, async () => ({
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
  }));
  tool('test_error_handling', 'Always fails with a tool error (isError: true).', null, async () => ({
    isError: true,
    content: [text('This tool intentionally returns an error for testing')],
  }));

  // --- notifications during a call ------------------------------------------------------------

  tool(
    'test_tool_with_logging',
    'Sends three info log notifications (50 ms apart) while it runs.',
    null,
    async (_args, ctx) => {
      for (const [i, data] of ['Tool execution started', 'Tool processing data', 'Tool execution completed'].entries()) {
        if (i > 0) await sleep(50);
        await ctx.mcpReq.notify({
          method: 'notifications/message',
          params: { level: 'info', logger: 'test_tool_with_logging', data },
        });
      }
      return { content: [text('Tool with logging executed successfully')] };
    },
  );
  tool(
    'test_tool_with_progress',
    'Reports progress 0, 50, 100 of 100 (50 ms apart) when given a progressToken.',
    null,
    async (_args, ctx) => {
      const progressToken = ctx.mcpReq._meta?.progressToken;
      for (const [i, progress] of [0, 50, 100].entries()) {
        if (i > 0) await sleep(50);
        if (progressToken !== undefined) {
          await ctx.mcpReq.notify({
            method: 'notifications/progress',
            params: { progressToken, progress, total: 100, message: `step ${i + 1} of 3` },
          });
        }
      }
      return { content: [text('Tool with progress executed successfully')] };
    },
  );
  // 2026-07-28: ctx.mcpReq.log is gated on the request's _meta logLevel (no logLevel -> no
  // notifications/message); on a 2025 session it follows logging/setLevel.
  tool('test_logging_tool', 'Logs one info message through the request-scoped log channel.', null, async (_args, ctx) => {
    await ctx.mcpReq.log('info', 'test_logging_tool ran');
    return { content: [text('logged through the request-scoped, logLevel-gated channel')] };
  });
  tool(
    'test_reconnection',
    'Closes its own SSE response stream mid-call (SEP-1699, 2025 sessions), then completes; the ' +
      'client resumes with GET + Last-Event-ID and receives the result.',
    null,
    async (_args, ctx) => {
      await sleep(50);
      const transport = ctx.sessionId ? sessions.get(ctx.sessionId)?.transport : undefined;
      const closed = transport !== undefined && ctx.mcpReq.id !== undefined;
      if (closed) transport.closeSSEStream(ctx.mcpReq.id);
      await sleep(200);
      return {
        content: [
          text(
            closed
              ? 'Reconnection test completed successfully: the response stream was closed mid-call and this result was delivered after the client resumed.'
              : 'Reconnection test completed successfully (stream not closed: no session).',
          ),
        ],
      };
    },
  );

  // --- client input: write-once (input_required on 2026-07-28, server->client requests on 2025)

  tool(
    'test_sampling',
    'Asks the client for an LLM completion (sampling/createMessage) of the prompt.',
    fromJsonSchema({
      type: 'object',
      properties: { prompt: { type: 'string', description: 'The prompt to send to the LLM' } },
      required: ['prompt'],
    }),
    async ({ prompt }, ctx) => {
      const answer = ctx.mcpReq.inputResponses?.llm;
      if (answer === undefined) {
        return inputRequired({
          inputRequests: {
            llm: inputRequired.createMessage({ messages: [{ role: 'user', content: text(prompt) }], maxTokens: 100 }),
          },
        });
      }
      const c = Array.isArray(answer.content) ? answer.content[0] : answer.content;
      return { content: [text(`LLM response: ${c?.type === 'text' ? c.text : JSON.stringify(c)}`)] };
    },
  );
  const elicitTool = (name, description, inputSchema, message, schema, label) =>
    tool(name, description, inputSchema, async (args, ctx) => {
      const answer = ctx.mcpReq.inputResponses?.answer;
      if (answer === undefined) {
        return inputRequired({
          inputRequests: {
            answer: inputRequired.elicit({ message: message(args), requestedSchema: schema }),
          },
        });
      }
      return {
        content: [text(`${label}: action=${answer.action}, content=${JSON.stringify(answer.content ?? {})}`)],
      };
    });
  elicitTool(
    'test_elicitation',
    'Asks the user (elicitation/create) for a username and an email address.',
    fromJsonSchema({
      type: 'object',
      properties: { message: { type: 'string', description: 'The message to show the user' } },
      required: ['message'],
    }),
    args => args.message,
    {
      type: 'object',
      properties: {
        username: { type: 'string', description: "User's response" },
        email: { type: 'string', description: "User's email address" },
      },
      required: ['username', 'email'],
    },
    'User response',
  );
  elicitTool(
    'test_elicitation_sep1034_defaults',
    'Elicitation whose schema has default values for every primitive type (SEP-1034).',
    null,
    () => 'Please review your profile (defaults are pre-filled)',
    {
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
    },
    'Elicitation completed',
  );
  elicitTool(
    'test_elicitation_sep1330_enums',
    'Elicitation with all five enum schema variants (SEP-1330).',
    null,
    () => 'Please select options from the enum fields',
    {
      type: 'object',
      properties: {
        untitledSingle: { type: 'string', description: 'Untitled single-select', enum: ['option1', 'option2', 'option3'] },
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
          description: 'Legacy titled enum',
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
    },
    'Elicitation completed',
  );

  // --- multi round-trip diagnostics (SEP-2322; the input-required-result-* scenarios) ----------

  const NAME_SCHEMA = { name: { type: 'string' } };
  tool(
    'test_input_required_result_elicitation',
    'MRTR: asks for the caller name (elicitation), then greets.',
    null,
    async (_args, ctx) => {
      const name = acceptedContent(ctx.mcpReq.inputResponses, 'user_name')?.name;
      if (typeof name !== 'string') {
        return inputRequired({ inputRequests: { user_name: elicitForm('What is your name?', NAME_SCHEMA) } });
      }
      return { content: [text(`Hello, ${name}!`)] };
    },
  );
  tool(
    'test_input_required_result_sampling',
    'MRTR: asks for an LLM completion (sampling), then echoes it.',
    null,
    async (_args, ctx) => {
      const r = ctx.mcpReq.inputResponses?.capital_question;
      if (r === undefined) {
        return inputRequired({
          inputRequests: {
            capital_question: inputRequired.createMessage({
              messages: [{ role: 'user', content: text('What is the capital of France?') }],
              maxTokens: 100,
            }),
          },
        });
      }
      return { content: [text(`Sampling response: ${typeof r.content?.text === 'string' ? r.content.text : JSON.stringify(r)}`)] };
    },
  );
  tool('test_input_required_result_list_roots', 'MRTR: asks for the client roots (roots/list).', null, async (_args, ctx) => {
    const roots = ctx.mcpReq.inputResponses?.client_roots?.roots;
    if (!Array.isArray(roots)) {
      return inputRequired({ inputRequests: { client_roots: inputRequired.listRoots() } });
    }
    return { content: [text(`Client exposed ${roots.length} root(s): ${roots.map(r => r.uri).join(', ')}`)] };
  });
  tool(
    'test_input_required_result_request_state',
    'MRTR: round-trips integrity-protected requestState alongside an elicitation.',
    null,
    async (_args, ctx) => {
      if (acceptedContent(ctx.mcpReq.inputResponses, 'confirm') === undefined) {
        return inputRequired({
          inputRequests: { confirm: elicitForm('Please confirm', { ok: { type: 'boolean' } }) },
          requestState: await requestStateCodec.mint({ tool: 'request_state', nonce: randomUUID() }),
        });
      }
      if (ctx.mcpReq.requestState() === undefined) {
        throw new ProtocolError(ProtocolErrorCode.InvalidParams, 'Invalid requestState: missing');
      }
      return { content: [text('state-ok: requestState verified and confirmation received')] };
    },
  );
  tool(
    'test_input_required_result_multiple_inputs',
    'MRTR: asks for elicitation, sampling and roots input in one round.',
    null,
    async (_args, ctx) => {
      const r = ctx.mcpReq.inputResponses;
      const name = acceptedContent(r, 'user_name')?.name;
      const greeting = r?.greeting?.content?.text;
      const roots = r?.client_roots?.roots;
      if (typeof name !== 'string' || typeof greeting !== 'string' || !Array.isArray(roots)) {
        return inputRequired({
          inputRequests: {
            user_name: elicitForm('What is your name?', NAME_SCHEMA),
            greeting: inputRequired.createMessage({
              messages: [{ role: 'user', content: text('Generate a greeting') }],
              maxTokens: 50,
            }),
            client_roots: inputRequired.listRoots(),
          },
          requestState: await requestStateCodec.mint({ tool: 'multiple_inputs', nonce: randomUUID() }),
        });
      }
      return { content: [text(`${greeting} ${name} - ${roots.length} root(s) visible`)] };
    },
  );
  tool(
    'test_input_required_result_multi_round',
    'MRTR: two elicitation rounds; the round number lives in the (changing) requestState.',
    null,
    async (_args, ctx) => {
      const state = ctx.mcpReq.requestState();
      const round = state?.tool === 'multi_round' && typeof state.round === 'number' ? state.round : 0;
      if (round === 0) {
        return inputRequired({
          inputRequests: { step1: elicitForm('Step 1: What is your name?', NAME_SCHEMA) },
          requestState: await requestStateCodec.mint({ tool: 'multi_round', round: 1, nonce: randomUUID() }),
        });
      }
      if (round === 1) {
        const name = acceptedContent(ctx.mcpReq.inputResponses, 'step1')?.name ?? 'unknown';
        return inputRequired({
          inputRequests: { step2: elicitForm('Step 2: What is your favorite color?', { color: { type: 'string' } }) },
          requestState: await requestStateCodec.mint({ tool: 'multi_round', round: 2, name, nonce: randomUUID() }),
        });
      }
      const color = acceptedContent(ctx.mcpReq.inputResponses, 'step2')?.color ?? 'unknown';
      return { content: [text(`Multi-round complete: ${String(state?.name ?? 'unknown')} likes ${color}`)] };
    },
  );
  tool(
    'test_input_required_result_tampered_state',
    'MRTR: a retry whose requestState fails integrity verification is rejected (-32602).',
    null,
    async (_args, ctx) => {
      if (ctx.mcpReq.requestState() !== undefined && acceptedContent(ctx.mcpReq.inputResponses, 'confirm') !== undefined) {
        return { content: [text('integrity-ok: requestState verified')] };
      }
      return inputRequired({
        inputRequests: { confirm: elicitForm('Please confirm', { ok: { type: 'boolean' } }) },
        requestState: await requestStateCodec.mint({ tool: 'tampered_state', nonce: randomUUID() }),
      });
    },
  );
  tool(
    'test_input_required_result_capabilities',
    'MRTR: only requests input kinds the request declared client capabilities for.',
    null,
    async (_args, ctx) => {
      if (ctx.mcpReq.inputResponses !== undefined) {
        return { content: [text('Capability-aware input requests fulfilled')] };
      }
      const declared = ctx.mcpReq.envelope?.[CLIENT_CAPABILITIES_META_KEY] ?? server.getClientCapabilities();
      const inputRequests = {};
      if (declared?.elicitation !== undefined) inputRequests.user_name = elicitForm('What is your name?', NAME_SCHEMA);
      if (declared?.sampling !== undefined) {
        inputRequests.greeting = inputRequired.createMessage({
          messages: [{ role: 'user', content: text('Generate a short greeting') }],
          maxTokens: 50,
        });
      }
      if (declared?.roots !== undefined) inputRequests.client_roots = inputRequired.listRoots();
      if (Object.keys(inputRequests).length === 0) {
        return { content: [text('No declared client capability supports an in-band input request')] };
      }
      return inputRequired({ inputRequests });
    },
  );

  // --- server-stateless diagnostics (SEP-2575) -------------------------------------------------

  tool(
    'test_missing_capability',
    'Requires the sampling client capability (undeclared -> -32021 MissingRequiredClientCapability).',
    null,
    async (_args, ctx) => {
      if (ctx.mcpReq.inputResponses?.llm_answer === undefined) {
        return inputRequired({
          inputRequests: {
            llm_answer: inputRequired.createMessage({
              messages: [{ role: 'user', content: text('Reply with the single word: pong') }],
              maxTokens: 16,
            }),
          },
        });
      }
      return { content: [text('sampling round-trip complete')] };
    },
  );
  tool(
    'test_streaming_elicitation',
    'A plain call whose response stream carries no independent top-level JSON-RPC request.',
    null,
    async () => ({ content: [text('stream observed: result frames only, no top-level requests')] }),
  );
  tool('test_trigger_tool_change', 'Publishes notifications/tools/list_changed.', null, async () => {
    if (scope === globalScope) handlers.strict.notify.toolsChanged();
    else server.sendToolListChanged().catch(onerror);
    return { content: [text('tools_list_changed published')] };
  });
  tool('test_trigger_prompt_change', 'Publishes notifications/prompts/list_changed.', null, async () => {
    if (scope === globalScope) handlers.strict.notify.promptsChanged();
    else server.sendPromptListChanged().catch(onerror);
    return { content: [text('prompts_list_changed published')] };
  });

  // SEP-2243: `region` is mirrored into the Mcp-Param-Region header; on 2026-07-28 the SDK
  // rejects a tools/call whose header and argument disagree (-32020, HTTP 400).
  tool(
    'test_x_mcp_header',
    'Echoes region, which the client mirrors into the Mcp-Param-Region header (SEP-2243).',
    fromJsonSchema({
      type: 'object',
      properties: {
        region: { type: 'string', description: 'mirrored into Mcp-Param-Region', 'x-mcp-header': 'Region' },
        level: { type: 'integer', description: 'not mirrored' },
      },
    }),
    async args => ({ content: [text(`region=${args.region ?? '<none>'}`)] }),
  );

  // --- JSON Schema 2020-12 (SEP-1613 / SEP-2106): advertised verbatim --------------------------

  tool(
    'json_schema_2020_12_tool',
    'Tool with JSON Schema 2020-12 features',
    fromJsonSchema({
      $schema: 'https://json-schema.org/draft/2020-12/schema',
      type: 'object',
      $defs: {
        address: {
          $anchor: 'addressDef',
          type: 'object',
          properties: { street: { type: 'string' }, city: { type: 'string' } },
        },
      },
      properties: {
        name: { type: 'string' },
        address: { $ref: '#/$defs/address' },
        contactMethod: { type: 'string', enum: ['phone', 'email'] },
        phone: { type: 'string' },
        email: { type: 'string' },
      },
      allOf: [{ anyOf: [{ required: ['phone'] }, { required: ['email'] }] }],
      if: { properties: { contactMethod: { const: 'phone' } }, required: ['contactMethod'] },
      then: { required: ['phone'] },
      else: { required: ['email'] },
      additionalProperties: false,
    }),
    async args => ({ content: [text(`Received: ${JSON.stringify(args)}`)] }),
  );

  // --- Marina-specific (not in the conformance contract) ---------------------------------------

  // Adds or removes the tool marina_extra and the prompt marina_extra_prompt (per session on
  // 2025; process-wide on 2026-07-28, announced on subscriptions/listen streams).
  tool('marina_toggle_extra', 'Adds or removes the tool marina_extra and the prompt marina_extra_prompt.', null, async () => {
    scope.extra = !scope.extra;
    if (scope === globalScope) {
      // Later per-request instances register them enabled; open listen streams are told.
      handlers.strict.notify.toolsChanged();
      handlers.strict.notify.promptsChanged();
    } else {
      // enable()/disable() send tools/ and prompts/list_changed on the session themselves.
      scope.extraTool[scope.extra ? 'enable' : 'disable']();
      scope.extraPrompt[scope.extra ? 'enable' : 'disable']();
    }
    return { content: [text(scope.extra ? 'extra on' : 'extra off')] };
  });
  const extraTool = tool('marina_extra', 'Present while toggled on.', null, async () => ({ content: [text('extra')] }));
  const extraPrompt = mcpServer.registerPrompt('marina_extra_prompt', { description: 'Present while toggled on.' }, async () => ({
    messages: [{ role: 'user', content: text('extra') }],
  }));
  if (!scope.extra) {
    extraTool.disable();
    extraPrompt.disable();
  }
  if (scope !== globalScope) Object.assign(scope, { extraTool, extraPrompt });
  // A question the server withdraws after timeout_ms (notifications/cancelled): 2025 sessions only
  // (2026-07-28 has no server->client requests).
  tool(
    'marina_elicitation_withdrawn',
    'Asks the user something, gives up after timeout_ms and withdraws the question (2025 sessions).',
    fromJsonSchema({ type: 'object', properties: { timeout_ms: { type: 'integer', minimum: 1 } } }),
    async ({ timeout_ms = 300 }, ctx) => {
      try {
        await ctx.mcpReq.send(
          { method: 'elicitation/create', params: { message: 'Still there?', requestedSchema: { type: 'object', properties: {} } } },
          { timeout: timeout_ms },
        );
        return { content: [text('answered')] };
      } catch (e) {
        return { content: [text(`withdrawn: ${e.message}`)] };
      }
    },
  );

  // --- resources -------------------------------------------------------------------------------

  mcpServer.registerResource(
    'static-text',
    'test://static-text',
    { title: 'Static text resource', description: 'A static text resource for testing', mimeType: 'text/plain' },
    async uri => ({
      contents: [{ uri: uri.href, mimeType: 'text/plain', text: 'This is the content of the static text resource.' }],
    }),
  );
  mcpServer.registerResource(
    'static-binary',
    'test://static-binary',
    { title: 'Static binary resource', description: 'A static binary resource (1x1 red PNG) for testing', mimeType: 'image/png' },
    async uri => ({ contents: [{ uri: uri.href, mimeType: 'image/png', blob: RED_PIXEL_PNG }] }),
  );
  mcpServer.registerResource(
    'watched-resource',
    WATCHED_URI,
    {
      title: 'Watched resource',
      description: 'Changes periodically while subscribed (notifications/resources/updated)',
      mimeType: 'text/plain',
    },
    async uri => ({
      contents: [{ uri: uri.href, mimeType: 'text/plain', text: `Watched resource content, version ${scope.watchedVersion}` }],
    }),
  );
  mcpServer.registerResource(
    'template-data',
    new ResourceTemplate('test://template/{id}/data', { list: undefined }),
    {
      title: 'Templated data resource',
      description: 'A resource template; the id is substituted into the content',
      mimeType: 'application/json',
    },
    async (uri, { id }) => ({
      contents: [
        {
          uri: uri.href,
          mimeType: 'application/json',
          text: JSON.stringify({ id, templateTest: true, data: `Data for ID: ${id}` }),
        },
      ],
    }),
  );
  if (scope !== globalScope) {
    server.setRequestHandler('resources/subscribe', async request => {
      scope.subscribe(request.params.uri);
      return {};
    });
    server.setRequestHandler('resources/unsubscribe', async request => {
      scope.unsubscribe(request.params.uri);
      return {};
    });
  }

  // --- prompts ---------------------------------------------------------------------------------

  mcpServer.registerPrompt('test_simple_prompt', { description: 'A simple prompt without arguments' }, async () => ({
    messages: [{ role: 'user', content: text('This is a simple prompt for testing.') }],
  }));
  mcpServer.registerPrompt(
    'test_prompt_with_arguments',
    {
      description: 'A prompt with two required arguments',
      argsSchema: z.object({
        arg1: z.string().describe('First test argument'),
        arg2: z.string().describe('Second test argument'),
      }),
    },
    async ({ arg1, arg2 }) => ({
      messages: [{ role: 'user', content: text(`Prompt with arguments: arg1='${arg1}', arg2='${arg2}'`) }],
    }),
  );
  mcpServer.registerPrompt(
    'test_prompt_with_embedded_resource',
    {
      description: 'A prompt that embeds a resource',
      argsSchema: z.object({ resourceUri: z.string().describe('URI of the resource to embed') }),
    },
    async ({ resourceUri }) => ({
      messages: [
        {
          role: 'user',
          content: {
            type: 'resource',
            resource: { uri: resourceUri, mimeType: 'text/plain', text: 'Embedded resource content for testing.' },
          },
        },
        { role: 'user', content: text('Please process the embedded resource above.') },
      ],
    }),
  );
  mcpServer.registerPrompt('test_prompt_with_image', { description: 'A prompt with image content' }, async () => ({
    messages: [
      { role: 'user', content: { type: 'image', data: RED_PIXEL_PNG, mimeType: 'image/png' } },
      { role: 'user', content: text('Please analyze the image above.') },
    ],
  }));
  // prompts/get is input_required-capable too (input-required-result-non-tool-request).
  mcpServer.registerPrompt(
    'test_input_required_result_prompt',
    { description: 'MRTR: a prompt that needs an elicitation answer before it renders' },
    async ctx => {
      const context = acceptedContent(ctx.mcpReq.inputResponses, 'user_context')?.context;
      if (typeof context !== 'string') {
        return inputRequired({
          inputRequests: {
            user_context: elicitForm('What context should the prompt use?', { context: { type: 'string' } }),
          },
        });
      }
      return { messages: [{ role: 'user', content: text(`Use the following context: ${context}`) }] };
    },
  );

  // --- completion ------------------------------------------------------------------------------

  const COMPLETIONS = {
    'ref/prompt:test_prompt_with_arguments:arg1': ['paris', 'park', 'party', 'test', 'testValue1'],
    'ref/prompt:test_prompt_with_arguments:arg2': ['london', 'lisbon', 'test', 'testValue2'],
    'ref/resource:test://template/{id}/data:id': ['1', '2', '3', '123'],
  };
  server.setRequestHandler('completion/complete', async request => {
    const { ref, argument } = request.params;
    const key = ref.type === 'ref/prompt' ? `ref/prompt:${ref.name}` : `ref/resource:${ref.uri}`;
    const prefix = (argument?.value ?? '').toLowerCase();
    const values = (COMPLETIONS[`${key}:${argument?.name}`] ?? []).filter(v => v.toLowerCase().startsWith(prefix));
    return { completion: { values: values.slice(0, 100), total: values.length, hasMore: false } };
  });

  return mcpServer;
}

// ---------------------------------------------------------------------------------------------
// 2026-07-28 (and the stateless 2025 fallback): the SDK's per-request handler.

handlers = {
  strict: createMcpHandler(() => createMcpServer(globalScope), { legacy: 'reject', onerror }),
};
handlers.stateless = createMcpHandler(() => createMcpServer(globalScope), { bus: handlers.strict.bus, onerror });

// test://watched-resource changes every WATCH_INTERVAL_MS; subscriptions/listen streams that
// asked for it get notifications/resources/updated (no-op when nobody listens).
const watchTimer = setInterval(() => {
  globalScope.watchedVersion += 1;
  handlers.strict.notify.resourceUpdated(WATCHED_URI);
}, WATCH_INTERVAL_MS);
watchTimer.unref();

// ---------------------------------------------------------------------------------------------
// 2025-era sessions: a sessionful WebStandardStreamableHTTPServerTransport per session.

// Per-session in-memory event store: events are stored per stream in order (also while the
// stream is disconnected), so a resume with Last-Event-ID gets everything missed and then the
// live tail. Priming events (empty message) are never replayed.
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
    if (events.length > MAX_EVENTS_PER_STREAM) this.#streamOf.delete(events.shift().eventId);
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

/** sessionId -> { transport, mcpServer, scope } */
const sessions = new Map();

function createSessionScope() {
  const scope = {
    extra: false,
    watchedVersion: 1,
    subscriptions: new Set(),
    timer: undefined,
    lastSeen: Date.now(),
    mcpServer: undefined,
    subscribe(uri) {
      scope.subscriptions.add(uri);
      if (uri === WATCHED_URI && !scope.timer) {
        scope.timer = setInterval(() => {
          scope.watchedVersion += 1;
          // No related request: goes to the standalone GET stream (stored while it is absent).
          scope.mcpServer?.server.sendResourceUpdated({ uri: WATCHED_URI }).catch(onerror);
        }, WATCH_INTERVAL_MS);
        scope.timer.unref();
      }
    },
    unsubscribe(uri) {
      scope.subscriptions.delete(uri);
      if (uri === WATCHED_URI && scope.timer) {
        clearInterval(scope.timer);
        scope.timer = undefined;
      }
    },
    dispose() {
      if (scope.timer) clearInterval(scope.timer);
      scope.timer = undefined;
      scope.subscriptions.clear();
    },
  };
  return scope;
}

function jsonRpcError(status, code, message, headers = {}) {
  return new Response(JSON.stringify({ jsonrpc: '2.0', error: { code, message }, id: null }), {
    status,
    headers: { 'Content-Type': 'application/json', ...headers },
  });
}

async function serveLegacySession(request, body) {
  const sid = request.headers.get('mcp-session-id') ?? undefined;
  if (sid !== undefined) {
    const session = sessions.get(sid);
    if (!session) return jsonRpcError(404, -32001, 'Session not found');
    session.scope.lastSeen = Date.now();
    return session.transport.handleRequest(request);
  }
  if (request.method !== 'POST') {
    if (request.method === 'GET' || request.method === 'DELETE') {
      return jsonRpcError(400, -32000, 'Bad Request: Mcp-Session-Id header is required');
    }
    return jsonRpcError(405, -32000, 'Method not allowed.', { Allow: 'GET, POST, DELETE' });
  }
  const isInit = Array.isArray(body) ? body.some(m => isInitializeRequest(m)) : isInitializeRequest(body);
  if (!isInit) return jsonRpcError(400, -32000, 'Bad Request: Mcp-Session-Id header is required');

  const scope = createSessionScope();
  const mcpServer = createMcpServer(scope);
  scope.mcpServer = mcpServer;
  const session = { scope, mcpServer, transport: undefined };
  const transport = new WebStandardStreamableHTTPServerTransport({
    sessionIdGenerator: () => randomUUID(),
    eventStore: new InMemoryEventStore(),
    retryInterval: RETRY_INTERVAL_MS,
    onsessioninitialized: id => {
      sessions.set(id, session);
    },
  });
  session.transport = transport;
  transport.onerror = onerror;
  transport.onclose = () => {
    scope.dispose();
    if (transport.sessionId && sessions.get(transport.sessionId) === session) sessions.delete(transport.sessionId);
    mcpServer.close().catch(() => {});
  };
  await mcpServer.connect(transport);
  const response = await transport.handleRequest(request);
  if (!transport.sessionId) await mcpServer.close(); // initialization was rejected
  return response;
}

// Close sessions nobody has used for SESSION_IDLE_MS (clients rarely send DELETE).
const sweeper = setInterval(
  () => {
    const cutoff = Date.now() - SESSION_IDLE_MS;
    for (const session of sessions.values()) {
      if (session.scope.lastSeen < cutoff) session.transport.close().catch(() => {});
    }
  },
  Math.min(60_000, Math.max(1000, SESSION_IDLE_MS)),
);
sweeper.unref();

// ---------------------------------------------------------------------------------------------
// HTTP (node:http <-> web-standard Request/Response)

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

function readBody(req) {
  return new Promise((resolve, reject) => {
    const chunks = [];
    let size = 0;
    req.on('data', chunk => {
      size += chunk.length;
      if (size <= MAX_BODY_BYTES) chunks.push(chunk);
    });
    req.on('end', () => resolve(size > MAX_BODY_BYTES ? null : Buffer.concat(chunks)));
    req.on('error', reject);
  });
}

async function toWebRequest(req, signal) {
  const headers = new Headers();
  for (const [name, value] of Object.entries(req.headers)) {
    if (Array.isArray(value)) for (const v of value) headers.append(name, v);
    else if (value !== undefined) headers.set(name, value);
  }
  let body;
  if (req.method !== 'GET' && req.method !== 'HEAD') {
    body = await readBody(req);
    if (body === null) return { tooLarge: true };
  }
  const { port } = httpServer.address();
  const request = new Request(`http://127.0.0.1:${port}${req.url}`, {
    method: req.method,
    headers,
    body: body && body.length > 0 ? body : undefined,
    signal,
    duplex: 'half',
  });
  return { request, body };
}

async function writeWebResponse(response, res) {
  const headers = {};
  response.headers.forEach((value, name) => {
    headers[name] = name in headers ? `${headers[name]}, ${value}` : value;
  });
  res.writeHead(response.status, response.statusText || undefined, headers);
  if (!response.body) return void res.end();
  const reader = response.body.getReader();
  res.on('close', () => reader.cancel().catch(() => {}));
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      if (!res.write(value)) await new Promise(resolve => res.once('drain', resolve).once('close', resolve));
    }
  } catch (err) {
    debug('response stream:', err.message);
  }
  res.end();
}

async function handle(req, res, path) {
  const abort = new AbortController();
  res.on('close', () => abort.abort());
  const { request, body, tooLarge } = await toWebRequest(req, abort.signal);
  if (tooLarge) return writeWebResponse(jsonRpcError(413, -32000, 'Payload Too Large'), res);
  let response;
  if (path === '/mcp-stateless') {
    response = await handlers.stateless.fetch(request);
  } else {
    let parsed;
    try {
      parsed = body && body.length > 0 ? JSON.parse(body.toString('utf8')) : undefined;
    } catch {
      parsed = undefined;
    }
    response = (await isLegacyRequest(request, parsed))
      ? await serveLegacySession(request, parsed)
      : await handlers.strict.fetch(request);
  }
  return writeWebResponse(response, res);
}

const httpServer = http.createServer((req, res) => {
  const path = (req.url ?? '/').split('?')[0];
  const invalid = checkHostAndOrigin(req);
  if (invalid) {
    debug('rejected:', invalid);
    res.writeHead(403, { 'Content-Type': 'application/json' });
    return res.end(JSON.stringify({ jsonrpc: '2.0', error: { code: -32000, message: `Forbidden: ${invalid}` }, id: null }));
  }
  if (path === '/health' && (req.method === 'GET' || req.method === 'HEAD')) {
    res.writeHead(200, { 'Content-Type': 'text/plain' });
    return res.end('ok\n');
  }
  if (path !== '/mcp' && path !== '/mcp-stateless') {
    res.writeHead(404, { 'Content-Type': 'text/plain' });
    return res.end('not found\n');
  }
  handle(req, res, path).catch(err => {
    debug('handler:', err.stack ?? err.message);
    if (res.headersSent) return void res.end();
    res.writeHead(500, { 'Content-Type': 'application/json' });
    res.end(JSON.stringify({ jsonrpc: '2.0', error: { code: -32603, message: 'Internal server error' }, id: null }));
  });
  return undefined;
});

let stopping = false;
function shutdown() {
  if (stopping) return;
  stopping = true;
  for (const session of sessions.values()) {
    session.scope.dispose();
    session.transport.close().catch(() => {});
  }
  handlers.strict.close().catch(() => {});
  handlers.stateless.close().catch(() => {});
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
