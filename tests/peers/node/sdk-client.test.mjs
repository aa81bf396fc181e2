// Marina driven by the official TypeScript SDK client (@modelcontextprotocol/sdk 1.32.2).
//
// Runs on the system Node 20:  node --test tests/peers/node/
// Starts its own `marina serve` (in-memory store) on a free loopback port and stops it with
// SIGTERM at the end. MARINA_BIN overrides the binary (default: <repo>/target/debug/marina).
// Every wait is bounded: per-test timeouts, per-request SDK timeouts, bounded polling loops.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { createServer } from 'node:net';
import { accessSync, constants, createWriteStream, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { setTimeout as sleep } from 'node:timers/promises';

import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import { CallToolResultSchema, ElicitRequestSchema } from '@modelcontextprotocol/sdk/types.js';

const MARINA_BIN = process.env.MARINA_BIN ?? fileURLToPath(new URL('../../../target/debug/marina', import.meta.url));
const REQUEST_TIMEOUT_MS = 15_000;
const TEST_TIMEOUT_MS = 45_000;

let marina; // { proc, base, url, logPath }
const tmp = mkdtempSync(join(tmpdir(), 'marina-node-peer-'));

function freePort() {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
  });
}

function logTail(n = 40) {
  try {
    return readFileSync(marina.logPath, 'utf8').split('\n').slice(-n).join('\n');
  } catch {
    return '<no log>';
  }
}

async function startMarina() {
  accessSync(MARINA_BIN, constants.X_OK); // fail loudly (not skip) when the binary is missing
  let lastErr;
  for (let attempt = 0; attempt < 3; attempt++) {
    // bounded retry: only to survive a lost free-port race
    const port = await freePort();
    const base = `http://127.0.0.1:${port}`;
    const logPath = join(tmp, `marina-${port}.log`);
    const log = createWriteStream(logPath);
    await once(log, 'open');
    // detached => own process group, so teardown can signal everything it spawned
    const proc = spawn(MARINA_BIN, ['serve', '--bind', `127.0.0.1:${port}`, '--admin-bind', '127.0.0.1:0', '--node-id', 'node-test'], {
      stdio: ['ignore', log, log],
      detached: true,
    });
    let exited = false;
    proc.once('exit', () => {
      exited = true;
    });
    const deadline = Date.now() + 20_000;
    while (Date.now() < deadline && !exited) {
      try {
        const r = await fetch(`${base}/readyz`, { signal: AbortSignal.timeout(1000) }); // ready, not just alive
        if (r.status === 200) return { proc, base, url: new URL(`${base}/t/demo/mcp`), logPath };
      } catch {
        /* not up yet */
      }
      await sleep(50);
    }
    lastErr = `marina did not become ready on ${base} (exited=${exited})`;
    await stopMarina({ proc });
  }
  throw new Error(lastErr);
}

/** SIGTERM the process group; SIGKILL after 10 s. Resolves to the exit code (null if killed). */
async function stopMarina({ proc }) {
  if (proc.exitCode !== null || proc.signalCode !== null) return proc.exitCode;
  const exited = once(proc, 'exit');
  try {
    process.kill(-proc.pid, 'SIGTERM');
  } catch {
    /* already gone */
  }
  const timer = sleep(10_000).then(() => 'timeout');
  if ((await Promise.race([exited, timer])) === 'timeout') {
    try {
      process.kill(-proc.pid, 'SIGKILL');
    } catch {
      /* already gone */
    }
    await exited;
    return null;
  }
  return proc.exitCode;
}

before(async () => {
  marina = await startMarina();
});

after(async () => {
  try {
    if (marina) await stopMarina(marina); // normally already stopped by the last test
  } finally {
    rmSync(tmp, { recursive: true, force: true });
  }
});

/** Parse SSE text into events ({ id, data }); tolerant of CRLF and partial trailing input. */
function parseSse(text) {
  const events = [];
  for (const block of text.split(/\r?\n\r?\n/)) {
    let id;
    const data = [];
    for (const line of block.split(/\r?\n/)) {
      if (line.startsWith('id:')) id = line.slice(3).trim();
      else if (line.startsWith('data:')) data.push(line.slice(5).replace(/^ /, ''));
    }
    if (id !== undefined || data.length) events.push({ id, data: data.join('\n') });
  }
  return events;
}

/**
 * A fetch that records method, JSON-RPC method, Last-Event-ID, status and content type of every
 * request. For SSE responses it also tees the body so a test can inspect exactly which events a
 * stream carried (the SDK does not report event ids on a resumed request).
 */
function recordingFetch(log) {
  return async (url, init = {}) => {
    const headers = new Headers(init.headers);
    let method;
    if (typeof init.body === 'string') {
      try {
        method = JSON.parse(init.body).method;
      } catch {
        /* not JSON */
      }
    }
    const entry = { httpMethod: init.method ?? 'GET', method, lastEventId: headers.get('last-event-id') };
    log.push(entry);
    let resp = await fetch(url, init);
    entry.status = resp.status;
    entry.contentType = resp.headers.get('content-type');
    if (resp.body && /^text\/event-stream/.test(entry.contentType ?? '')) {
      const [forSdk, forLog] = resp.body.tee();
      entry.sseText = '';
      entry.sseDone = (async () => {
        const dec = new TextDecoder();
        try {
          for await (const chunk of forLog) entry.sseText += dec.decode(chunk, { stream: true });
        } catch (err) {
          entry.sseError = err; // aborted by the client: keep what was read
        }
      })();
      resp = new Response(forSdk, { status: resp.status, statusText: resp.statusText, headers: resp.headers });
    }
    return resp;
  };
}

async function connect({ wire = [], capabilities = {}, sessionId, protocolVersion } = {}) {
  const transport = new StreamableHTTPClientTransport(marina.url, {
    fetch: recordingFetch(wire),
    sessionId,
    // Bounded: at most 2 automatic reconnects, short delays (Marina sends its own retry:).
    reconnectionOptions: {
      initialReconnectionDelay: 200,
      maxReconnectionDelay: 2000,
      reconnectionDelayGrowFactor: 1.5,
      maxRetries: 2,
    },
  });
  if (protocolVersion) transport.setProtocolVersion(protocolVersion);
  const client = new Client({ name: 'marina-node-peer', version: '0.0.1' }, { capabilities });
  await client.connect(transport); // initialize + notifications/initialized (skipped if sessionId given)
  return { client, transport, wire };
}

async function close({ client, transport }, { terminate = true } = {}) {
  if (terminate && transport.sessionId) await transport.terminateSession();
  await client.close();
}

function onlyText(result) {
  assert.notEqual(result.isError, true, `tool returned isError: ${JSON.stringify(result.content)}`);
  assert.equal(result.content.length, 1, JSON.stringify(result.content));
  assert.equal(result.content[0].type, 'text');
  return result.content[0].text;
}

test('initialize, listTools, callTool echo/add', { timeout: TEST_TIMEOUT_MS }, async () => {
  const c = await connect();
  const { sessionId } = c.transport;
  try {
    assert.match(sessionId ?? '', /^[\x21-\x7e]+$/, 'no valid MCP-Session-Id');
    assert.equal(c.transport.protocolVersion, '2025-11-25');
    const info = c.client.getServerVersion();
    assert.ok(info?.name && info?.version, `serverInfo: ${JSON.stringify(info)}`);
    assert.ok(c.client.getServerCapabilities()?.tools, 'tools capability missing');

    const { tools } = await c.client.listTools(undefined, { timeout: REQUEST_TIMEOUT_MS });
    const names = new Set(tools.map((t) => t.name));
    for (const n of ['echo', 'add', 'countdown', 'log', 'confirm']) assert.ok(names.has(n), `missing tool ${n}`);
    const countdown = tools.find((t) => t.name === 'countdown');
    assert.equal(countdown.annotations?.readOnlyHint, true);
    assert.equal(countdown.annotations?.idempotentHint, true);

    const echo = await c.client.callTool({ name: 'echo', arguments: { text: 'hi from node ✓' } }, undefined, {
      timeout: REQUEST_TIMEOUT_MS,
    });
    assert.equal(onlyText(echo), 'hi from node ✓');
    const sum = await c.client.callTool({ name: 'add', arguments: { a: 40, b: 2 } }, undefined, {
      timeout: REQUEST_TIMEOUT_MS,
    });
    assert.equal(onlyText(sum), '42');

    const init = c.wire.find((e) => e.method === 'initialize');
    assert.equal(init.status, 200);
    const call = c.wire.find((e) => e.method === 'tools/call');
    assert.match(call.contentType ?? '', /^text\/event-stream/);
  } finally {
    await close(c);
  }
  // The client DELETEd its session; the spec then requires 404 for that session id.
  const del = c.wire.find((e) => e.httpMethod === 'DELETE');
  assert.ok(del && del.status >= 200 && del.status < 300, `DELETE: ${JSON.stringify(del)}`);
  const r = await fetch(marina.url, {
    method: 'POST',
    headers: {
      'content-type': 'application/json',
      accept: 'application/json, text/event-stream',
      'mcp-session-id': sessionId,
      'mcp-protocol-version': '2025-11-25',
    },
    body: JSON.stringify({ jsonrpc: '2.0', id: 9, method: 'tools/list' }),
    signal: AbortSignal.timeout(REQUEST_TIMEOUT_MS),
  });
  assert.equal(r.status, 404);
});

test('countdown reports progress via onprogress', { timeout: TEST_TIMEOUT_MS }, async () => {
  const c = await connect();
  try {
    const steps = 4;
    const seen = [];
    const res = await c.client.callTool({ name: 'countdown', arguments: { steps, interval_ms: 40 } }, undefined, {
      timeout: REQUEST_TIMEOUT_MS,
      onprogress: (p) => seen.push([p.progress, p.total]),
    });
    assert.equal(onlyText(res), `done: ${steps} steps`);
    // The SDK delivers notifications synchronously in stream order, before the response.
    assert.deepEqual(
      seen,
      Array.from({ length: steps }, (_, i) => [i + 1, steps]),
    );
  } finally {
    await close(c);
  }
});

test('confirm round-trips an elicitation (form mode, capability {elicitation:{}})', { timeout: TEST_TIMEOUT_MS }, async () => {
  const c = await connect({ capabilities: { elicitation: {} } });
  const asked = [];
  c.client.setRequestHandler(ElicitRequestSchema, async (req) => {
    asked.push(req.params);
    return { action: 'accept', content: { answer: 'node-says-yes' } };
  });
  try {
    const res = await c.client.callTool({ name: 'confirm', arguments: { question: 'Proceed?' } }, undefined, {
      timeout: REQUEST_TIMEOUT_MS,
    });
    assert.equal(onlyText(res), 'node-says-yes');
    assert.equal(asked.length, 1);
    assert.match(asked[0].message, /Proceed\?/);
    assert.equal(asked[0].requestedSchema?.properties?.answer?.type, 'string');
  } finally {
    await close(c);
  }
});

test('resume a dropped tools/call stream with a resumption token', { timeout: TEST_TIMEOUT_MS }, async () => {
  const steps = 6;
  const call = {
    method: 'tools/call',
    params: { name: 'countdown', arguments: { steps, interval_ms: 300 }, _meta: { progressToken: 'node-resume' } },
  };

  // Phase 1: start the call, keep the event ids, then abort all streams (no DELETE) after two.
  const wire1 = [];
  const c1 = await connect({ wire: wire1 });
  const { sessionId } = c1.transport;
  const version = c1.transport.protocolVersion;
  assert.ok(sessionId, 'no session id');
  const tokens = [];
  let pending;
  await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`only got tokens ${JSON.stringify(tokens)}`)), REQUEST_TIMEOUT_MS);
    pending = c1.client
      .request(call, CallToolResultSchema, {
        timeout: REQUEST_TIMEOUT_MS,
        onresumptiontoken: (t) => {
          tokens.push(t);
          if (tokens.length === 2) {
            clearTimeout(timer);
            resolve();
          }
        },
      })
      .then(
        (r) => ({ early: r }),
        (e) => ({ error: e }),
      );
  });
  await c1.transport.close(); // aborts the POST SSE stream; the tool keeps running server-side
  const phase1 = await pending;
  assert.ok(phase1.error, `phase 1 should have been cut off, got ${JSON.stringify(phase1.early)}`);
  assert.equal(new Set(tokens).size, tokens.length, `duplicate event ids ${tokens}`);
  // Progress values the client had seen up to (and including) the last token it kept.
  const post = wire1.find((e) => e.method === 'tools/call');
  await post.sseDone;
  assert.ok(post.sseError, 'the phase-1 POST stream was not cut off by the client');
  const phase1Events = parseSse(post.sseText);
  const cut = phase1Events.findIndex((e) => e.id === tokens.at(-1));
  assert.ok(cut >= 0, `token ${tokens.at(-1)} not found in the POST stream`);
  const seenProgress = phase1Events
    .slice(0, cut + 1)
    .filter((e) => e.data.trim())
    .map((e) => JSON.parse(e.data))
    .filter((m) => m.method === 'notifications/progress')
    .map((m) => m.params.progress);
  const lastSeen = Math.max(0, ...seenProgress);

  // Phase 2: a new transport re-attached to the same session resumes via GET + Last-Event-ID.
  const wire = [];
  const c2 = await connect({ wire, sessionId, protocolVersion: version });
  let out;
  try {
    out = await c2.client.request(call, CallToolResultSchema, {
      timeout: REQUEST_TIMEOUT_MS,
      resumptionToken: tokens.at(-1),
    });
  } finally {
    await close(c2);
  }
  assert.equal(onlyText(out), `done: ${steps} steps`);

  const get = wire.find((e) => e.httpMethod === 'GET' && e.lastEventId);
  assert.ok(get, `no GET with Last-Event-ID: ${JSON.stringify(wire)}`);
  assert.equal(get.lastEventId, tokens.at(-1));
  assert.equal(get.status, 200);
  assert.match(get.contentType ?? '', /^text\/event-stream/);
  assert.ok(!wire.some((e) => e.method === 'tools/call'), 'the tool was called again instead of resumed');

  // The resumed stream carries exactly what came after the last seen event: fresh event ids,
  // the progress notifications the client had not seen yet, in order, then the response.
  await get.sseDone;
  const events = parseSse(get.sseText);
  const ids = events.map((e) => e.id).filter(Boolean);
  assert.ok(ids.length > 0, 'the resumed stream carried no event ids');
  assert.ok(!ids.some((id) => tokens.includes(id)), `replayed already-seen events: ${ids} vs ${tokens}`);
  const msgs = events.filter((e) => e.data.trim()).map((e) => JSON.parse(e.data));
  const progress = msgs.filter((m) => m.method === 'notifications/progress').map((m) => m.params.progress);
  const expected = Array.from({ length: steps - lastSeen }, (_, i) => lastSeen + 1 + i);
  assert.deepEqual(progress, expected, `progress on resume (phase 1 saw up to ${lastSeen})`);
  assert.ok(msgs.at(-1)?.result, `last message is not the response: ${JSON.stringify(msgs.at(-1))}`);
});

// Runs last (node:test runs a file's top-level tests in order): after serving the sessions
// above, SIGTERM must be a clean shutdown, exit code 0, within stopMarina's 10 s bound.
test('SIGTERM stops marina with exit code 0', { timeout: TEST_TIMEOUT_MS }, async () => {
  const started = Date.now();
  const code = await stopMarina(marina);
  const took = ((Date.now() - started) / 1000).toFixed(1);
  assert.equal(code, 0, `marina exit code ${code} after ${took} s (null = needed SIGKILL); log tail:\n${logTail()}`);
});
