// Marina driven by the TypeScript SDK v2 client (@modelcontextprotocol/client 2.4.0), which
// speaks MCP 2026-07-28 when asked to negotiate (`versionNegotiation: { mode: 'auto' }`).
//
// Runs on the system Node 20:  node --test tests/peers/node/
// Starts its own `marina serve` (in-memory store, `server.stateless_era` on) on port 0, reads the
// address it prints, and stops it with SIGTERM at the end; likewise two upstreams for tenant `up`:
// the sessionful test upstream (tests/peers/upstream, SDK v1) and the 2026-07-28 one
// (tests/peers/upstream-v2, SDK v2). Every wait is bounded.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { accessSync, constants, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { setTimeout as sleep } from 'node:timers/promises';

import { Client, StreamableHTTPClientTransport } from '@modelcontextprotocol/client';

const MARINA_BIN = process.env.MARINA_BIN ?? fileURLToPath(new URL('../../../target/debug/marina', import.meta.url));
const TEST_TIMEOUT_MS = 45_000;

const tmp = mkdtempSync(join(tmpdir(), 'marina-node-modern-'));
let marina; // { proc, url, upUrl }
const upstreams = []; // child processes

// A test upstream (`dir`/server.mjs) on a free port: its URL from its "listening" line.
async function startUpstream(dir) {
  const proc = spawn(process.execPath, ['server.mjs'], {
    cwd: fileURLToPath(new URL(`../${dir}/`, import.meta.url)),
    env: { ...process.env, PORT: '0' },
    stdio: ['ignore', 'pipe', 'ignore'],
    detached: true,
  });
  upstreams.push(proc);
  let out = '';
  proc.stdout.setEncoding('utf8');
  proc.stdout.on('data', (chunk) => {
    out += chunk;
  });
  const deadline = Date.now() + 20_000;
  while (Date.now() < deadline) {
    const m = out.match(/upstream listening on (http:\/\/127\.0\.0\.1:\d+\/mcp)/);
    if (m) return m[1];
    if (proc.exitCode !== null) break;
    await sleep(50);
  }
  throw new Error(`the ${dir} upstream did not start (stdout: ${out})`);
}

async function startMarina() {
  accessSync(MARINA_BIN, constants.X_OK); // fail loudly (not skip) when the binary is missing
  const [v1, v2] = [await startUpstream('upstream'), await startUpstream('upstream-v2')];
  const config = join(tmp, 'marina.yaml');
  writeFileSync(
    config,
    'server: {stateless_era: true}\negress: {allow_loopback: true}\ntenants:\n' +
      '  demo:\n    upstreams: [{kind: builtin}]\n' +
      `  up:\n    upstreams:\n      - {kind: mcp, name: conf, url: "${v1}"}\n      - {kind: mcp, name: v2, url: "${v2}"}\n`,
  );
  const proc = spawn(MARINA_BIN, ['serve', '--bind', '127.0.0.1:0', '--admin-bind', '', '--node-id', 'node-modern', '--config', config], {
    stdio: ['ignore', 'pipe', 'inherit'],
    detached: true,
  });
  // The node prints the address it bound (port 0: no port race).
  let out = '';
  const deadline = Date.now() + 20_000;
  proc.stdout.setEncoding('utf8');
  proc.stdout.on('data', (chunk) => {
    out += chunk;
  });
  while (Date.now() < deadline) {
    const m = out.match(/marina listening on (http:\/\/127\.0\.0\.1:\d+)/);
    if (m) {
      for (;;) {
        try {
          const r = await fetch(`${m[1]}/readyz`, { signal: AbortSignal.timeout(1000) });
          if (r.status === 200) return { proc, url: new URL(`${m[1]}/t/demo/mcp`), upUrl: new URL(`${m[1]}/t/up/mcp`) };
        } catch {
          /* not ready yet */
        }
        if (Date.now() > deadline) break;
        await sleep(50);
      }
    }
    if (proc.exitCode !== null) break;
    await sleep(50);
  }
  process.kill(-proc.pid, 'SIGKILL');
  throw new Error(`marina did not start (stdout: ${out})`);
}

before(async () => {
  marina = await startMarina();
});

after(async () => {
  if (marina && marina.proc.exitCode === null) {
    const exited = once(marina.proc, 'exit');
    process.kill(-marina.proc.pid, 'SIGTERM');
    const timer = sleep(10_000).then(() => 'timeout');
    if ((await Promise.race([exited, timer])) === 'timeout') process.kill(-marina.proc.pid, 'SIGKILL');
  }
  for (const p of upstreams) {
    if (p.exitCode === null) process.kill(-p.pid, 'SIGKILL');
  }
  rmSync(tmp, { recursive: true, force: true });
});

function client(mode, asked) {
  const c = new Client({ name: 'marina-node-modern', version: '0' }, { capabilities: { elicitation: {} }, versionNegotiation: { mode } });
  c.setRequestHandler('elicitation/create', async (req) => {
    asked.push(req.params.message);
    const props = req.params.requestedSchema?.properties ?? {};
    if ('name' in props) return { action: 'accept', content: { name: 'Ada' } };
    if ('username' in props) return { action: 'accept', content: { username: 'ada', email: 'ada@example.com' } };
    return { action: 'accept', content: { answer: `yes to ${req.params.message}` } };
  });
  return c;
}

test('the v2 client negotiates 2026-07-28 and completes a multi round-trip call', { timeout: TEST_TIMEOUT_MS }, async () => {
  const asked = [];
  const c = client('auto', asked);
  await c.connect(new StreamableHTTPClientTransport(marina.url));
  try {
    assert.equal(c.getNegotiatedProtocolVersion(), '2026-07-28');
    const names = (await c.listTools()).tools.map((t) => t.name);
    assert.deepEqual(names, ['add', 'confirm', 'countdown', 'echo', 'log']);
    const sum = await c.callTool({ name: 'add', arguments: { a: 2, b: 3 } });
    assert.equal(sum.content[0].text, '5');
    // `confirm` asks a question: input_required, answered by the elicitation handler, retried.
    const confirmed = await c.callTool({ name: 'confirm', arguments: { question: 'Go?' } });
    assert.equal(confirmed.isError, false);
    assert.equal(confirmed.content[0].text, 'yes to Go?');
    assert.deepEqual(asked, ['Go?']);
  } finally {
    await c.close();
  }
});

test('the same endpoint still serves the legacy handshake', { timeout: TEST_TIMEOUT_MS }, async () => {
  const asked = [];
  const c = client('legacy', asked);
  await c.connect(new StreamableHTTPClientTransport(marina.url));
  try {
    assert.equal(c.getNegotiatedProtocolVersion(), '2025-11-25');
    const confirmed = await c.callTool({ name: 'confirm', arguments: { question: 'Ship?' } });
    assert.equal(confirmed.content[0].text, 'yes to Ship?');
    assert.deepEqual(asked, ['Ship?']);
  } finally {
    await c.close();
  }
});

test('the v2 client answers the questions of upstreams of both eras through Marina', { timeout: TEST_TIMEOUT_MS }, async () => {
  const asked = [];
  const c = client('auto', asked);
  await c.connect(new StreamableHTTPClientTransport(marina.upUrl));
  try {
    assert.equal(c.getNegotiatedProtocolVersion(), '2026-07-28');
    // A sessionful upstream asks during its call: the call waits, parked; input_required; retried.
    const old = await c.callTool({ name: 'conf.test_elicitation', arguments: { message: 'Who?' } });
    assert.equal(old.isError ?? false, false, JSON.stringify(old));
    assert.match(old.content[0].text, /action=accept.*ada@example\.com/);
    // A 2026-07-28 upstream answers input_required itself: passed on, its state sealed in ours.
    const modern = await c.callTool({ name: 'v2.test_input_required_result_elicitation', arguments: {} });
    assert.equal(modern.content[0].text, 'Hello, Ada!');
    assert.deepEqual(asked, ['Who?', 'What is your name?']);
  } finally {
    await c.close();
  }
});
