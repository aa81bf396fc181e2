-- mcp_call.lua: wrk script firing MCP `tools/call` at Marina (after perf-peers.md §9.2).
-- Environment:
--   MCP_SESSIONS  comma-separated MCP-Session-Id values, given to wrk threads round-robin
--   MCP_PROTO     MCP-Protocol-Version header (default 2025-11-25)
--   MCP_TOOL      tool name (default echo); MCP_ARGS arguments JSON (default {"text":"hello"})
--   MCP_METHOD    "call" (default), "list" (tools/list) or "initialize" (then no session is used)
--   MCP_AUTH      Authorization header value, if any (e.g. "Bearer <token>")
--   MCP_STATELESS "1": requests of the stateless era (MCP 2026-07-28): no session, MCP_PROTO
--                 defaults to 2026-07-28, the routing headers Mcp-Method (and Mcp-Name on
--                 tools/call) and the request's own `_meta` in params (version, capabilities,
--                 client info); not with MCP_METHOD=initialize
-- A response counts as ok when HTTP 200 and the body (JSON or SSE) contains "result" and no
-- "isError":true (with MCP_STATELESS, also "resultType":"complete"). Ids are unique per thread.
local threads = {}
local nthreads = 0

function setup(thread)
  nthreads = nthreads + 1
  thread:set("tid", nthreads)
  table.insert(threads, thread)
end

function init(args)
  local sessions = {}
  for s in string.gmatch(os.getenv("MCP_SESSIONS") or "", "[^,]+") do
    table.insert(sessions, s)
  end
  mode = os.getenv("MCP_METHOD") or "call"
  headers = {}
  headers["Content-Type"] = "application/json"
  headers["Accept"] = "application/json, text/event-stream"
  if os.getenv("MCP_AUTH") then
    headers["Authorization"] = os.getenv("MCP_AUTH")
  end
  local stateless = os.getenv("MCP_STATELESS") == "1"
  local proto = os.getenv("MCP_PROTO") or (stateless and "2026-07-28" or "2025-11-25")
  if mode ~= "initialize" then
    headers["MCP-Protocol-Version"] = proto
    if #sessions > 0 and not stateless then  -- none: a stateless server
      headers["MCP-Session-Id"] = sessions[((tid - 1) % #sessions) + 1]
    end
  end
  local tool = os.getenv("MCP_TOOL") or "echo"
  local targs = os.getenv("MCP_ARGS") or '{"text":"hello"}'
  -- The stateless era: each request describes its client in its own `_meta`.
  local meta = ""
  if stateless then
    meta = '"_meta":{"io.modelcontextprotocol/protocolVersion":"' .. proto .. '",'
      .. '"io.modelcontextprotocol/clientCapabilities":{},'
      .. '"io.modelcontextprotocol/clientInfo":{"name":"wrk","version":"0"}}'
    headers["Mcp-Method"] = (mode == "list") and "tools/list" or "tools/call"
    if mode ~= "list" then
      headers["Mcp-Name"] = tool
    end
  end
  prefix = '{"jsonrpc":"2.0","id":"t' .. tid .. '-'
  if mode == "list" then
    suffix = '","method":"tools/list","params":{' .. meta .. '}}'
  elseif mode == "initialize" then
    suffix = '","method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"wrk","version":"0"}}}'
  elseif stateless then
    suffix = '","method":"tools/call","params":{"name":"' .. tool .. '","arguments":' .. targs .. ',' .. meta .. '}}'
  else
    suffix = '","method":"tools/call","params":{"name":"' .. tool .. '","arguments":' .. targs .. '}}'
  end
  -- A stateless answer must also say it is complete (not, e.g., input_required).
  complete = stateless and mode ~= "initialize"
  n, ok, bad = 0, 0, 0
end

function request()
  n = n + 1
  return wrk.format("POST", nil, headers, prefix .. n .. suffix)
end

function response(status, hdrs, body)
  if status == 200 and string.find(body, '"result"', 1, true)
     and not string.find(body, '"isError"%s*:%s*true')
     and (not complete or string.find(body, '"resultType":"complete"', 1, true)) then
    ok = ok + 1
  else
    bad = bad + 1
    if bad <= 2 then io.stderr:write("BAD " .. status .. " " .. string.sub(body or "", 1, 300) .. "\n") end
  end
end

function done(summary, latency, requests)
  local tok, tbad = 0, 0
  for _, t in ipairs(threads) do
    tok = tok + t:get("ok")
    tbad = tbad + t:get("bad")
  end
  local secs = summary.duration / 1e6
  io.write(string.format("MCPRESULT ok=%d bad=%d calls_per_s=%.0f p50_ms=%.3f p99_ms=%.3f\n",
    tok, tbad, tok / secs, latency:percentile(50) / 1000, latency:percentile(99) / 1000))
end
