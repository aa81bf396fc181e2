// Upstream relays through a two-node Marina cluster, driven by the official TypeScript SDK client
// (@modelcontextprotocol/sdk 1.32.2).
//
// Runs on the system Node 20:  node --test tests/peers/node/upstream-relay.test.mjs
//
// Starts (and stops, by process group, with bounded waits) a redis-server, two upstream MCP
// servers and two `marina serve` nodes sharing that Redis, with one tenant `relay` whose upstreams
// are `conf` (tests/peers/upstream/server.mjs, conformance naming contract) and `ev`
// (@modelcontextprotocol/server-everything, streamableHttp).
//
// One SDK Client (one MCP session) talks to both nodes through a custom fetch: requests of each
// kind (JSON-RPC method, or HTTP method for GET/DELETE) alternate A, B, A, ...; the client's answer
// to a server->client request (sampling/createMessage, elicitation/create, roots/list) always goes
// to the node other than the one whose SSE stream carried that request, so Marina must forward
// it to the node holding the session.
//
// MARINA_BIN overrides the binary (default: <repo>/target/debug/marina).

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { createServer, createConnection } from 'node:net';
import { accessSync, constants, createWriteStream, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { setTimeout as sleep } from 'node:timers/promises';

import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import {
  CreateMessageRequestSchema,
  ElicitRequestSchema,
  ListRootsRequestSchema,
  LoggingMessageNotificationSchema,
} from '@modelcontextprotocol/sdk/types.js';

const REPO = fileURLToPath(new URL('../../../', import.meta.url));
const MARINA_BIN = process.env.MARINA_BIN ?? join(REPO, 'target/debug/marina');
const UPSTREAM_DIR = join(REPO, 'tests/peers/upstream');
const EVERYTHING = join(UPSTREAM_DIR, 'node_modules/@modelcontextprotocol/server-everything/dist/index.js');
const TENANT = 'relay';
const REQUEST_TIMEOUT_MS = 20_000;
const TEST_TIMEOUT_MS = 60_000;
// Marina opens an upstream session's GET stream before using the session, so it is open well
// within this after the first call.
const FOLLOWER_SETTLE_MS = 2_000;

const ROOT = { uri: 'file:///work/marina-relay-root', name: 'marina-relay-root' };
const SAMPLING_ANSWER = 'sampled-through-the-other-node';

const tmp = mkdtempSync(join(tmpdir(), 'marina-node-relay-'));
const procs = []; // everything started here, stopped in reverse order
let nodes; // { A: port, B: port }

// ------------------------------------------------------------------------------------------------
// Processes

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

async function openLog(name) {
  const log = createWriteStream(join(tmp, name));
  await once(log, 'open');
  return log;
}

/** Spawn in its own process group (detached) so teardown can signal all of it. */
function start(cmd, args, { log, env = {}, cwd, stdout } = {}) {
  const proc = spawn(cmd, args, {
    cwd,
    env: { ...process.env, ...env },
    stdio: ['ignore', stdout ?? log, log],
    detached: true,
  });
  proc.exited = false;
  proc.once('exit', () => {
    proc.exited = true;
  });
  proc.once('error', (err) => {
    // e.g. ENOENT: reported by waitFor as an early exit
    proc.exited = true;
    proc.spawnError = err;
  });
  procs.push(proc);
  return proc;
}

/** SIGTERM the process group; SIGKILL after 10 s. */
async function stop(proc) {
  if (proc.exited || proc.exitCode !== null || proc.signalCode !== null) return;
  const exited = once(proc, 'exit');
  try {
    process.kill(-proc.pid, 'SIGTERM');
  } catch {
    /* already gone */
  }
  if ((await Promise.race([exited, sleep(10_000).then(() => 'timeout')])) === 'timeout') {
    try {
      process.kill(-proc.pid, 'SIGKILL');
    } catch {
      /* already gone */
    }
    await Promise.race([exited, sleep(5_000)]);
  }
}

function portOpen(port) {
  return new Promise((resolve) => {
    const s = createConnection({ host: '127.0.0.1', port });
    s.setTimeout(500);
    s.once('connect', () => {
      s.destroy();
      resolve(true);
    });
    s.once('error', () => resolve(false));
    s.once('timeout', () => {
      s.destroy();
      resolve(false);
    });
  });
}

/** Poll `check` every 50 ms until it is truthy, the process exits, or `ms` pass. */
async function waitFor(check, proc, ms, what) {
  const deadline = Date.now() + ms;
  while (Date.now() < deadline) {
    if (proc.exited) throw new Error(`${what}: process exited early (code ${proc.exitCode}, ${proc.spawnError ?? ''})`);
    if (await check()) return;
    await sleep(50);
  }
  throw new Error(`${what}: not ready within ${ms} ms`);
}

async function startRedis() {
  const exe = 'redis-server'; // from PATH; scripts/install-test-deps.sh installs it
  for (let attempt = 0; ; attempt++) {
    const port = await freePort();
    const proc = start(exe, ['--bind', '127.0.0.1', '--port', String(port), '--save', '', '--appendonly', 'no', '--dir', tmp], {
      log: await openLog(`redis-${port}.log`),
    });
    try {
      await waitFor(() => portOpen(port), proc, 10_000, 'redis-server');
      return `redis://127.0.0.1:${port}/`;
    } catch (err) {
      await stop(proc);
      if (attempt === 2) throw err;
    }
  }
}

async function startConfUpstream() {
  const proc = start(process.execPath, [join(UPSTREAM_DIR, 'server.mjs')], {
    cwd: UPSTREAM_DIR,
    env: { PORT: '0' },
    log: await openLog('conf-upstream.log'),
    stdout: 'pipe',
  });
  let out = '';
  proc.stdout.setEncoding('utf8');
  proc.stdout.on('data', (d) => {
    out += d;
  });
  let url;
  await waitFor(
    () => (url = out.match(/upstream listening on (http:\/\/127\.0\.0\.1:\d+\/mcp)/)?.[1]),
    proc,
    20_000,
    'test upstream',
  );
  return url;
}

async function startEverything() {
  accessSync(EVERYTHING, constants.R_OK); // missing: run scripts/install-test-deps.sh
  for (let attempt = 0; ; attempt++) {
    const port = await freePort();
    const proc = start(process.execPath, [EVERYTHING, 'streamableHttp'], {
      cwd: UPSTREAM_DIR,
      env: { PORT: String(port) },
      log: await openLog(`everything-${port}.log`),
    });
    try {
      await waitFor(() => portOpen(port), proc, 20_000, 'server-everything');
      return `http://127.0.0.1:${port}/mcp`;
    } catch (err) {
      await stop(proc);
      if (attempt === 2) throw err;
    }
  }
}

async function startMarina(nodeId, redisUrl, config) {
  accessSync(MARINA_BIN, constants.X_OK); // fail loudly (not skip) when the binary is missing
  for (let attempt = 0; ; attempt++) {
    const port = await freePort();
    const base = `http://127.0.0.1:${port}`;
    const proc = start(
      MARINA_BIN,
      ['serve', '--bind', `127.0.0.1:${port}`, '--admin-bind', '127.0.0.1:0', '--node-id', nodeId, '--redis-url', redisUrl, '--config', config],
      { log: await openLog(`marina-${nodeId}-${port}.log`), env: { RUST_BACKTRACE: '1' } },
    );
    try {
      await waitFor(
        async () => {
          try {
            return (await fetch(`${base}/readyz`, { signal: AbortSignal.timeout(1000) })).status === 200; // ready, not just alive
          } catch {
            return false;
          }
        },
        proc,
        20_000,
        `marina ${nodeId}`,
      );
      return port;
    } catch (err) {
      await stop(proc);
      if (attempt === 2) throw err;
    }
  }
}

before(async () => {
  const redisUrl = await startRedis();
  const confUrl = await startConfUpstream();
  const evUrl = await startEverything();
  const config = join(tmp, 'marina.yaml');
  writeFileSync(
    config,
    [
      'egress:',
      '  allow_loopback: true',
      'tenants:',
      `  ${TENANT}:`,
      '    upstreams:',
      `      - {kind: mcp, name: conf, url: "${confUrl}"}`,
      `      - {kind: mcp, name: ev, url: "${evUrl}"}`,
      '',
    ].join('\n'),
  );
  nodes = { A: await startMarina('relay-A', redisUrl, config), B: await startMarina('relay-B', redisUrl, config) };
});

after(async () => {
  try {
    for (const p of procs.reverse()) await stop(p);
  } finally {
    rmSync(tmp, { recursive: true, force: true });
  }
});

// ------------------------------------------------------------------------------------------------
// A fetch that alternates nodes and sends answers to the other node

const other = (node) => (node === 'A' ? 'B' : 'A');

/**
 * Returns { fetch, hops }. `hops` records every request: node, HTTP method, JSON-RPC method, and
 * for the client's answers the server request they answer and the node that carried it.
 */
function alternatingFetch() {
  const hops = [];
  const carried = new Map(); // JSON of a server request id -> { node, method }
  const turns = new Map();
  const fetchFn = async (input, init = {}) => {
    const url = new URL(input instanceof Request ? input.url : String(input));
    const httpMethod = init.method ?? 'GET';
    let body;
    if (typeof init.body === 'string') {
      try {
        body = JSON.parse(init.body);
      } catch {
        /* not JSON */
      }
    }
    const hop = { node: undefined, httpMethod, method: body?.method };
    if (body && !Array.isArray(body) && body.method === undefined && body.id !== undefined) {
      hop.answerTo = body.id;
      const c = carried.get(JSON.stringify(body.id));
      if (c) {
        hop.carriedBy = c.node;
        hop.answeredMethod = c.method;
        hop.node = other(c.node);
      }
    }
    if (!hop.node) {
      const kind = hop.method ?? httpMethod;
      const turn = turns.get(kind) ?? 0;
      turns.set(kind, turn + 1);
      hop.node = turn % 2 === 0 ? 'A' : 'B';
    }
    url.port = String(nodes[hop.node]);
    hops.push(hop);
    let settle;
    hop.done = new Promise((resolve) => {
      settle = resolve;
    });
    let resp;
    try {
      resp = await fetch(url, init);
      hop.status = resp.status;
    } finally {
      settle();
    }
    if (resp.body && /^text\/event-stream/.test(resp.headers.get('content-type') ?? '')) {
      // Note which node carried each server request, before the SDK sees (and answers) it.
      let buf = '';
      const dec = new TextDecoder();
      const scan = new TransformStream({
        transform(chunk, controller) {
          buf += dec.decode(chunk, { stream: true });
          const lines = buf.split('\n');
          buf = lines.pop();
          for (const line of lines) {
            if (!line.startsWith('data:')) continue;
            try {
              const msg = JSON.parse(line.slice(5));
              if (msg && msg.method !== undefined && msg.id !== undefined) {
                carried.set(JSON.stringify(msg.id), { node: hop.node, method: msg.method });
              }
            } catch {
              /* not a JSON line */
            }
          }
          controller.enqueue(chunk);
        },
      });
      resp = new Response(resp.body.pipeThrough(scan), {
        status: resp.status,
        statusText: resp.statusText,
        headers: resp.headers,
      });
    }
    return resp;
  };
  return { fetch: fetchFn, hops };
}

function describe(hops) {
  return JSON.stringify(hops.map((h) => [h.node, h.httpMethod, h.method ?? h.answeredMethod ?? h.answerTo, h.status]));
}

function assertCallsOnBothNodes(hops) {
  const n = new Set(hops.filter((h) => h.method === 'tools/call').map((h) => h.node));
  assert.deepEqual([...n].sort(), ['A', 'B'], `tools/call not on both nodes: ${describe(hops)}`);
}

/** At least `count` answers to `method`, each POSTed to the node that did not carry it, accepted. */
async function assertAnsweredThroughOtherNode(hops, method, count) {
  const answers = hops.filter((h) => h.answeredMethod === method);
  assert.ok(answers.length >= count, `answers to ${method}: ${describe(hops)}`);
  // The SDK does not wait for the POST of its answer before handling the call's result.
  await Promise.race([Promise.all(answers.map((h) => h.done)), sleep(REQUEST_TIMEOUT_MS)]);
  for (const h of answers) {
    const { done, ...shown } = h;
    assert.ok(['A', 'B'].includes(h.carriedBy) && h.node !== h.carriedBy, JSON.stringify(shown));
    assert.equal(h.status, 202, JSON.stringify(shown));
  }
}

/** A connected Client on both nodes, declaring sampling, elicitation and roots with handlers. */
async function connect() {
  const { fetch: f, hops } = alternatingFetch();
  const transport = new StreamableHTTPClientTransport(new URL(`http://127.0.0.1:${nodes.A}/t/${TENANT}/mcp`), {
    fetch: f,
    reconnectionOptions: {
      initialReconnectionDelay: 200,
      maxReconnectionDelay: 2000,
      reconnectionDelayGrowFactor: 1.5,
      maxRetries: 2,
    },
  });
  const client = new Client(
    { name: 'marina-node-relay-peer', version: '0.0.1' },
    { capabilities: { sampling: {}, elicitation: {}, roots: { listChanged: true } } },
  );
  const asked = { sampling: [], elicitation: [], roots: 0, logs: [] };
  client.setRequestHandler(CreateMessageRequestSchema, async (req) => {
    asked.sampling.push(req.params);
    return {
      role: 'assistant',
      content: { type: 'text', text: `${SAMPLING_ANSWER} #${asked.sampling.length}` },
      model: 'marina-relay-test-model',
      stopReason: 'endTurn',
    };
  });
  client.setRequestHandler(ElicitRequestSchema, async (req) => {
    asked.elicitation.push(req.params);
    if (req.params.requestedSchema?.properties?.username) {
      return { action: 'accept', content: { username: 'ada', email: 'ada@example.com' } };
    }
    return { action: 'accept', content: { name: 'Ada Lovelace', check: true, email: 'ada@example.com', integer: 7 } };
  });
  client.setRequestHandler(ListRootsRequestSchema, async () => {
    asked.roots += 1;
    return { roots: [ROOT] };
  });
  client.setNotificationHandler(LoggingMessageNotificationSchema, (n) => {
    asked.logs.push(n.params);
  });
  await client.connect(transport);
  return { client, transport, hops, asked };
}

async function close({ client, transport }) {
  try {
    if (transport.sessionId) await transport.terminateSession();
  } finally {
    await client.close();
  }
}

function texts(result) {
  assert.notEqual(result.isError, true, `tool returned isError: ${JSON.stringify(result.content)}`);
  for (const b of result.content) assert.equal(b.type, 'text', JSON.stringify(b));
  return result.content.map((b) => b.text).join('\n');
}

const call = (c, name, args = {}, opts = {}) =>
  c.client.callTool({ name, arguments: args }, undefined, { timeout: REQUEST_TIMEOUT_MS, ...opts });

async function waitUntil(pred, what, ms = 5_000) {
  const deadline = Date.now() + ms;
  while (!pred()) {
    if (Date.now() > deadline) assert.fail(`timed out waiting for ${what}`);
    await sleep(10);
  }
}

// ------------------------------------------------------------------------------------------------
// Tests

test('tools of both upstreams are listed and callable through both nodes', { timeout: TEST_TIMEOUT_MS }, async () => {
  const c = await connect();
  try {
    const { tools } = await c.client.listTools(undefined, { timeout: REQUEST_TIMEOUT_MS });
    const names = new Set(tools.map((t) => t.name));
    for (const n of [
      'conf.test_sampling',
      'conf.test_elicitation',
      'conf.test_tool_with_progress',
      'conf.test_tool_with_logging',
      'ev.trigger-sampling-request',
      'ev.trigger-elicitation-request',
      'ev.get-roots-list',
      'ev.trigger-long-running-operation',
    ]) {
      assert.ok(names.has(n), `${n} not listed: ${[...names].sort()}`);
    }
    assert.equal(texts(await call(c, 'ev.echo', { message: 'hi via A and B' })), 'Echo: hi via A and B');
    assert.equal(texts(await call(c, 'conf.test_simple_text')), 'This is a simple text response for testing.');
    assertCallsOnBothNodes(c.hops);
  } finally {
    await close(c);
  }
});

test('sampling is relayed and answered through the other node', { timeout: TEST_TIMEOUT_MS }, async () => {
  const c = await connect();
  try {
    const conf = await call(c, 'conf.test_sampling', { prompt: 'What is 2+2?' });
    const ev = await call(c, 'ev.trigger-sampling-request', { prompt: 'Say hi', maxTokens: 20 });
    assert.equal(texts(conf), `LLM response: ${SAMPLING_ANSWER} #1`);
    assert.ok(texts(ev).includes(`${SAMPLING_ANSWER} #2`), texts(ev));
    assert.ok(texts(ev).includes('marina-relay-test-model'), texts(ev));
    assert.equal(c.asked.sampling.length, 2);
    assert.equal(c.asked.sampling[0].messages[0].content.text, 'What is 2+2?');
    assert.ok(c.asked.sampling[1].messages[0].content.text.includes('Say hi'));
    assert.equal(c.asked.sampling[1].maxTokens, 20);
    await assertAnsweredThroughOtherNode(c.hops, 'sampling/createMessage', 2);
    assertCallsOnBothNodes(c.hops);
  } finally {
    await close(c);
  }
});

test('elicitation is relayed and answered through the other node', { timeout: TEST_TIMEOUT_MS }, async () => {
  const c = await connect();
  try {
    const conf = texts(await call(c, 'conf.test_elicitation', { message: 'Who are you?' }));
    const prefix = 'User response: action=accept, content=';
    assert.ok(conf.startsWith(prefix), conf);
    assert.deepEqual(JSON.parse(conf.slice(prefix.length)), { username: 'ada', email: 'ada@example.com' });
    const ev = texts(await call(c, 'ev.trigger-elicitation-request'));
    assert.ok(ev.includes('User provided the requested information'), ev);
    assert.ok(ev.includes('- Name: Ada Lovelace') && ev.includes('- Email: ada@example.com'), ev);
    assert.ok(ev.includes('- Favorite Integer: 7'), ev);
    assert.equal(c.asked.elicitation.length, 2);
    assert.equal(c.asked.elicitation[0].message, 'Who are you?');
    await assertAnsweredThroughOtherNode(c.hops, 'elicitation/create', 2);
    assertCallsOnBothNodes(c.hops);
  } finally {
    await close(c);
  }
});

// server-everything asks roots/list outside any call (350 ms after its session starts, and from
// get-roots-list while it has no answer yet): it travels on the upstream's standalone GET stream,
// which the session's node follows onto the client's GET stream. The upstream session is started
// first (ev.echo) and Marina given time to open its upstream GET stream.
test('roots/list is relayed (upstream GET stream) and answered through the other node', { timeout: TEST_TIMEOUT_MS }, async () => {
  const c = await connect();
  try {
    assert.equal(texts(await call(c, 'ev.echo', { message: 'start the upstream session' })), 'Echo: start the upstream session');
    await sleep(FOLLOWER_SETTLE_MS);
    const res = texts(await call(c, 'ev.get-roots-list'));
    assert.ok(res.includes('Current MCP Roots (1 total)'), res);
    assert.ok(res.includes(ROOT.uri) && res.includes(ROOT.name), res);
    assert.ok(c.asked.roots >= 1);
    await waitUntil(
      () => c.asked.logs.some((p) => String(p.data).includes('Roots updated: 1 root(s)')),
      `server-everything's 'Roots updated' log on the GET stream (got ${JSON.stringify(c.asked.logs)})`,
    );
    await assertAnsweredThroughOtherNode(c.hops, 'roots/list', 1);
    assert.ok(c.hops.some((h) => h.httpMethod === 'GET'), 'the SDK opened no GET stream');
  } finally {
    await close(c);
  }
});

// When get-roots-list is the session's first upstream call, server-everything sends its roots/list
// on its GET stream (not the call's stream) at once, while handling the call. It must reach the
// client: Marina opens the upstream session's GET stream before it sends the session's next request
// (a message sent while no GET stream is open is lost; see FollowerLink in
// services/gateway/src/upstream/mcp.rs).
test('roots/list on the first upstream call of a session', { timeout: TEST_TIMEOUT_MS }, async () => {
  const c = await connect();
  try {
    const res = texts(await call(c, 'ev.get-roots-list', {}, { timeout: 8_000 }));
    assert.ok(res.includes('Current MCP Roots (1 total)'), res);
    assert.ok(c.asked.roots >= 1);
  } finally {
    await close(c);
  }
});

test('progress is relayed (both upstreams)', { timeout: TEST_TIMEOUT_MS }, async () => {
  const c = await connect();
  try {
    const evSeen = [];
    const confSeen = [];
    const ev = await call(c, 'ev.trigger-long-running-operation', { duration: 2, steps: 4 }, {
      onprogress: (p) => evSeen.push([p.progress, p.total]),
    });
    const conf = await call(c, 'conf.test_tool_with_progress', {}, {
      onprogress: (p) => confSeen.push([p.progress, p.total, p.message]),
    });
    assert.equal(texts(ev), 'Long running operation completed. Duration: 2 seconds, Steps: 4.');
    assert.equal(texts(conf), 'Tool with progress executed successfully');
    // The SDK delivers progress synchronously in stream order, before the response.
    assert.deepEqual(evSeen, [[1, 4], [2, 4], [3, 4], [4, 4]]);
    assert.deepEqual(confSeen, [
      [0, 100, 'step 1 of 3'],
      [50, 100, 'step 2 of 3'],
      [100, 100, 'step 3 of 3'],
    ]);
    assertCallsOnBothNodes(c.hops);
  } finally {
    await close(c);
  }
});

test('log messages are relayed', { timeout: TEST_TIMEOUT_MS }, async () => {
  const c = await connect();
  try {
    const first = await call(c, 'conf.test_tool_with_logging');
    const second = await call(c, 'conf.test_tool_with_logging');
    assert.equal(texts(first), 'Tool with logging executed successfully');
    assert.equal(texts(second), 'Tool with logging executed successfully');
    const fromTool = () => c.asked.logs.filter((p) => p.logger === 'test_tool_with_logging');
    await waitUntil(() => fromTool().length >= 6, `6 log messages (got ${JSON.stringify(c.asked.logs)})`);
    const expected = ['Tool execution started', 'Tool processing data', 'Tool execution completed'];
    assert.deepEqual(
      fromTool().map((p) => p.data),
      [...expected, ...expected],
    );
    assert.ok(fromTool().every((p) => p.level === 'info'));
    assertCallsOnBothNodes(c.hops);
  } finally {
    await close(c);
  }
});

// ------------------------------------------------------------------------------------------------
// Cancellation, subscriptions, log level, list changes, roots changes

// (Import declarations are hoisted: these belong to the tests below.)
import { gunzipSync } from 'node:zlib';
import {
  ErrorCode,
  ResourceListChangedNotificationSchema,
  ResourceUpdatedNotificationSchema,
} from '@modelcontextprotocol/sdk/types.js';

const opts = { timeout: REQUEST_TIMEOUT_MS };

/** Polls the async `check` every 200 ms until it returns truthy (then returns that) or `ms` pass. */
async function eventually(check, what, ms = 10_000) {
  const deadline = Date.now() + ms;
  for (;;) {
    const v = await check();
    if (v) return v;
    if (Date.now() > deadline) assert.fail(`timed out waiting for ${what}`);
    await sleep(200);
  }
}

async function allResources(c) {
  const out = [];
  let cursor;
  do {
    const page = await c.client.listResources(cursor ? { cursor } : undefined, opts);
    out.push(...page.resources);
    cursor = page.nextCursor;
  } while (cursor);
  return out;
}

// The SDK sends notifications/cancelled when a request's signal aborts and rejects the request
// (McpError RequestTimeout with the abort reason). Neither upstream's tools heed their abort signal,
// so the upstream's stop is not observable as such; what is: the cancellation is accepted by the
// node it reaches, no more progress of the call reaches the client (the SDK reports progress for a
// token it has dropped through onerror), and the session's calls, progress included, go on.
test('a cancelled call stops relaying and the session goes on', { timeout: TEST_TIMEOUT_MS }, async () => {
  const c = await connect();
  const errors = [];
  c.client.onerror = (e) => errors.push(String(e?.message ?? e));
  try {
    const ac = new AbortController();
    const seen = [];
    const pending = call(c, 'ev.trigger-long-running-operation', { duration: 10, steps: 20 }, {
      signal: ac.signal,
      onprogress: (p) => {
        seen.push(p.progress);
        ac.abort('marina-relay-test-cancel');
      },
    });
    await assert.rejects(pending, (e) => e.code === ErrorCode.RequestTimeout && e.message.includes('marina-relay-test-cancel'));
    await waitUntil(() => c.hops.some((h) => h.method === 'notifications/cancelled'), 'the notifications/cancelled POST');
    const [cancel] = c.hops.filter((h) => h.method === 'notifications/cancelled');
    await Promise.race([cancel.done, sleep(REQUEST_TIMEOUT_MS)]);
    assert.equal(cancel.status, 202, describe(c.hops));
    await sleep(1_600); // a step every 500 ms: three more would be due by now
    assert.deepEqual(seen, [1]);
    assert.deepEqual(errors.filter((m) => m.includes('progress')), []);
    const again = [];
    const res = await call(c, 'ev.trigger-long-running-operation', { duration: 0.4, steps: 2 }, {
      onprogress: (p) => again.push(p.progress),
    });
    assert.equal(texts(res), 'Long running operation completed. Duration: 0.4 seconds, Steps: 2.');
    assert.deepEqual(again, [1, 2]);
    assert.equal(texts(await call(c, 'conf.test_simple_text')), 'This is a simple text response for testing.');
  } finally {
    await close(c);
  }
});

// conf sends notifications/resources/updated for test://watched-resource every WATCH_INTERVAL_MS
// (1 s) while subscribed, on its GET stream; the session's node follows it to the client.
test('resources/updated is relayed while subscribed and stops after unsubscribe', { timeout: TEST_TIMEOUT_MS }, async () => {
  const c = await connect();
  const uri = 'test://watched-resource';
  const updates = [];
  c.client.setNotificationHandler(ResourceUpdatedNotificationSchema, (n) => updates.push(n.params.uri));
  try {
    await c.client.subscribeResource({ uri }, opts);
    await waitUntil(() => updates.length >= 2, `2 resources/updated (got ${JSON.stringify(updates)})`, 6_000);
    assert.deepEqual(new Set(updates), new Set([uri]));
    const { contents } = await c.client.readResource({ uri }, opts);
    const version = Number(contents[0].text.match(/^Watched resource content, version (\d+)$/)?.[1]);
    assert.ok(version >= 3, contents[0].text); // 1 + one per update
    await c.client.unsubscribeResource({ uri }, opts);
    await sleep(300); // an update already on its way may still arrive
    const seen = updates.length;
    await sleep(2_500);
    assert.equal(updates.length, seen, `updates after unsubscribe: ${JSON.stringify(updates)}`);
  } finally {
    await close(c);
  }
});

// conf's test_tool_with_logging sends its info logs only if the upstream session's level lets them
// through (server.isMessageIgnored), so they depend on Marina passing logging/setLevel on: to new
// upstream sessions (the first 'error') and to started ones ('debug', then 'error'). Marina filters
// logs by the session's level again before they reach the client, so what the client sees cannot
// tell the upstream's filtering from Marina's; it shows that the level holds on both nodes.
test('logging/setLevel: no info logs at error, logs at debug', { timeout: TEST_TIMEOUT_MS }, async () => {
  const c = await connect();
  try {
    const fromTool = () => c.asked.logs.filter((p) => p.logger === 'test_tool_with_logging');
    const logged = async () => {
      assert.equal(texts(await call(c, 'conf.test_tool_with_logging')), 'Tool with logging executed successfully');
      await sleep(300); // logs precede the result on the call's stream; let their handlers run
    };
    await c.client.setLoggingLevel('error', opts);
    await logged();
    assert.deepEqual(fromTool(), []);
    await c.client.setLoggingLevel('debug', opts);
    await logged();
    assert.deepEqual(
      fromTool().map((p) => p.data),
      ['Tool execution started', 'Tool processing data', 'Tool execution completed'],
    );
    await c.client.setLoggingLevel('error', opts);
    await logged();
    assert.equal(fromTool().length, 3, JSON.stringify(fromTool()));
    const levelHops = c.hops.filter((h) => h.method === 'logging/setLevel');
    assert.deepEqual(levelHops.map((h) => h.node), ['A', 'B', 'A']);
  } finally {
    await close(c);
  }
});

// server-everything's gzip-file-as-resource registers its output as a session resource
// (demo://resource/session/<name>), and its McpServer then sends notifications/resources/list_changed
// on its GET stream. Nothing makes either upstream send a tools or prompts list_changed later: conf
// sends none, and server-everything's only tools/list_changed (for the tools it registers once it
// knows the client's capabilities) goes out during initialization, before Marina follows its GET
// stream.
test('resources/list_changed is relayed and the list shows the new resource', { timeout: TEST_TIMEOUT_MS }, async () => {
  const c = await connect();
  let changed = 0;
  c.client.setNotificationHandler(ResourceListChangedNotificationSchema, () => {
    changed += 1;
  });
  try {
    const uri = 'demo://resource/session/marina-relay.txt.gz';
    const content = 'gzipped through Marina';
    assert.ok(!(await allResources(c)).some((r) => r.uri === uri), 'listed before it exists');
    const res = await call(c, 'ev.gzip-file-as-resource', {
      name: 'marina-relay.txt.gz',
      data: `data:text/plain;base64,${Buffer.from(content).toString('base64')}`,
      outputType: 'resourceLink',
    });
    assert.notEqual(res.isError, true, JSON.stringify(res.content));
    assert.equal(res.content[0].type, 'resource_link', JSON.stringify(res.content));
    assert.equal(res.content[0].uri, uri);
    await waitUntil(() => changed >= 1, 'notifications/resources/list_changed');
    const listed = (await allResources(c)).find((r) => r.uri === uri);
    assert.equal(listed?.mimeType, 'application/gzip', JSON.stringify(listed));
    const { contents } = await c.client.readResource({ uri }, opts);
    assert.equal(gunzipSync(Buffer.from(contents[0].blob, 'base64')).toString(), content);
  } finally {
    await close(c);
  }
});

// server-everything asks roots/list again (on its GET stream) when it gets
// notifications/roots/list_changed, which Marina passes on to the started upstream sessions in the
// background. The initial roots sync is waited for first, so no roots/list asked before the
// change can pick up the new roots.
test('roots/list_changed from the client makes the upstream ask for roots again', { timeout: TEST_TIMEOUT_MS }, async () => {
  const c = await connect();
  try {
    assert.equal(texts(await call(c, 'ev.echo', { message: 'start the upstream session' })), 'Echo: start the upstream session');
    const synced = (n) => c.asked.logs.some((p) => String(p.data).includes(`Roots updated: ${n} root(s)`));
    await waitUntil(() => synced(1), `the initial roots sync (got ${JSON.stringify(c.asked.logs)})`);
    assert.ok(texts(await call(c, 'ev.get-roots-list')).includes('Current MCP Roots (1 total)'));
    const asked = c.asked.roots;
    const added = { uri: 'file:///work/marina-relay-root-2', name: 'marina-relay-root-2' };
    c.client.setRequestHandler(ListRootsRequestSchema, async () => {
      c.asked.roots += 1;
      return { roots: [ROOT, added] };
    });
    await c.client.sendRootsListChanged();
    const res = await eventually(async () => {
      const t = texts(await call(c, 'ev.get-roots-list'));
      return t.includes(added.uri) && t;
    }, `get-roots-list to show ${added.uri}`);
    assert.ok(res.includes('Current MCP Roots (2 total)') && res.includes(ROOT.uri), res);
    assert.equal(c.asked.roots, asked + 1);
    await assertAnsweredThroughOtherNode(c.hops, 'roots/list', 2);
  } finally {
    await close(c);
  }
});
