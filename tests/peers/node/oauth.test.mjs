// OAuth with the official TypeScript SDK client (@modelcontextprotocol/sdk 1.32.2): a bearer
// token from a real authorization server (oidc-provider, tests/peers/oidc) opens a session on a
// protected tenant and calls its tools; without it the connection is refused with 401.
//
// Runs on the system Node 20:  node --test tests/peers/node/
// Starts the issuer and `marina serve` (in-memory store) on free loopback ports and stops both.
// Every wait is bounded.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { createServer } from 'node:net';
import { accessSync, constants, createWriteStream, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { setTimeout as sleep } from 'node:timers/promises';

import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';

const MARINA_BIN = process.env.MARINA_BIN ?? fileURLToPath(new URL('../../../target/debug/marina', import.meta.url));
const OIDC_DIR = fileURLToPath(new URL('../oidc/', import.meta.url));
const TEST_TIMEOUT_MS = 45_000;
const START_TIMEOUT_MS = 30_000;

const tmp = mkdtempSync(join(tmpdir(), 'marina-node-oauth-'));
const procs = [];
let issuer; // http://127.0.0.1:<port>
let endpoint; // Marina's tenant endpoint

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

async function waitFor(check, what) {
  const deadline = Date.now() + START_TIMEOUT_MS;
  while (Date.now() < deadline) {
    if (await check()) return;
    await sleep(50);
  }
  throw new Error(`${what} not ready within ${START_TIMEOUT_MS} ms`);
}

async function start(cmd, args, opts, name) {
  const log = createWriteStream(join(tmp, `${name}.log`));
  await once(log, 'open');
  const proc = spawn(cmd, args, { stdio: ['ignore', log, log], detached: true, ...opts });
  procs.push(proc);
  return proc;
}

async function ok(url) {
  try {
    return (await fetch(url, { signal: AbortSignal.timeout(1000) })).status === 200;
  } catch {
    return false;
  }
}

before(async () => {
  accessSync(MARINA_BIN, constants.X_OK);
  const issuerPort = await freePort();
  const marinaPort = await freePort();
  issuer = `http://127.0.0.1:${issuerPort}`;
  const base = `http://127.0.0.1:${marinaPort}`;
  endpoint = `${base}/t/secure/mcp`;
  await start('node', ['issuer.mjs'], { cwd: OIDC_DIR, env: { ...process.env, PORT: String(issuerPort), RESOURCES: endpoint } }, 'issuer');
  await waitFor(() => ok(`${issuer}/.well-known/openid-configuration`), 'issuer');
  const config = join(tmp, 'marina.yaml');
  writeFileSync(
    config,
    `egress: {allow_loopback: true}\ntenants:\n  secure:\n    auth:\n      oauth: {issuer: "${issuer}", required_scopes: ["mcp:tools"]}\n`,
  );
  await start(MARINA_BIN, ['serve', '--bind', `127.0.0.1:${marinaPort}`, '--admin-bind', '127.0.0.1:0', '--node-id', 'oauth', '--config', config], {}, 'marina');
  await waitFor(() => ok(`${base}/readyz`), 'marina');
});

after(async () => {
  for (const p of procs.reverse()) {
    try {
      process.kill(-p.pid, 'SIGKILL');
    } catch {
      /* already gone */
    }
  }
  rmSync(tmp, { recursive: true, force: true });
});

async function token(client = 'gw-test') {
  const r = await fetch(`${issuer}/token`, {
    method: 'POST',
    headers: {
      authorization: `Basic ${Buffer.from(`${client}:gw-secret`).toString('base64')}`,
      'content-type': 'application/x-www-form-urlencoded',
    },
    body: new URLSearchParams({ grant_type: 'client_credentials', resource: endpoint, scope: 'mcp:tools' }),
  });
  assert.equal(r.status, 200);
  return (await r.json()).access_token;
}

async function connect(headers) {
  const transport = new StreamableHTTPClientTransport(new URL(endpoint), { requestInit: { headers } });
  const client = new Client({ name: 'marina-node-oauth', version: '0.0.1' }, { capabilities: {} });
  await client.connect(transport);
  return { client, transport };
}

test('a bearer token from the issuer opens a session and calls tools', { timeout: TEST_TIMEOUT_MS }, async () => {
  const { client, transport } = await connect({ authorization: `Bearer ${await token()}` });
  const { tools } = await client.listTools();
  assert.ok(tools.some((t) => t.name === 'echo'), JSON.stringify(tools));
  const r = await client.callTool({ name: 'add', arguments: { a: 40, b: 2 } });
  assert.equal(r.content[0].text, '42');
  await transport.terminateSession();
  await client.close();
});

test('without a token the connection is refused with 401', { timeout: TEST_TIMEOUT_MS }, async () => {
  await assert.rejects(connect({}), (err) => err?.code === 401);
  const r = await fetch(endpoint, {
    method: 'POST',
    headers: { 'content-type': 'application/json', accept: 'application/json, text/event-stream' },
    body: '{"jsonrpc":"2.0","id":1,"method":"ping"}',
  });
  assert.equal(r.status, 401);
  const challenge = r.headers.get('www-authenticate');
  assert.match(challenge, /^Bearer /);
  assert.match(challenge, /resource_metadata="http:\/\/127\.0\.0\.1:\d+\/\.well-known\/oauth-protected-resource\/t\/secure\/mcp"/);
});
