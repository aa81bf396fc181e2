-- mcp_call.lua: wrk script firing MCP `tools/call` at Marina (after perf-peers.md §9.2).
-- Environment:
--   MCP_SESSIONS  comma-separated MCP-Session-Id values, given to wrk threads round-robin
--   MCP_PROTO     MCP-Protocol-Version header (default 2025-11-25)
--   MCP_TOOL      tool name (default echo); MCP_ARGS arguments JSON (default {"text":"hello"})
--   MCP_METHOD    "call" (default), "list" (tools/list) or "initialize" (then no session is used)
--   MCP_AUTH      Authorization header value, if any (e.g. "Bearer <token>")
-- A response counts as ok when HTTP 200 and the body (JSON or SSE) contains "result" and no
-- "isError":true. Ids are unique per thread.
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
  if mode ~= "initialize" then
    headers["MCP-Protocol-Version"] = os.getenv("MCP_PROTO") or "2025-11-25"
    if #sessions > 0 then  -- none: a stateless server
      headers["MCP-Session-Id"] = sessions[((tid - 1) % #sessions) + 1]
    end
  end
  local tool = os.getenv("MCP_TOOL") or "echo"
  local targs = os.getenv("MCP_ARGS") or '{"text":"hello"}'
  prefix = '{"jsonrpc":"2.0","id":"t' .. tid .. '-'
  if mode == "list" then
    suffix = '","method":"tools/list","params":{}}'
  elseif mode == "initialize" then
    suffix = '","method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"wrk","version":"0"}}}'
  else
    suffix = '","method":"tools/call","params":{"name":"' .. tool .. '","arguments":' .. targs .. '}}'
  end
  n, ok, bad = 0, 0, 0
end

function request()
  n = n + 1
  return wrk.format("POST", nil, headers, prefix .. n .. suffix)
end

function response(status, hdrs, body)
  if status == 200 and string.find(body, '"result"', 1, true)
     and not string.find(body, '"isError"%s*:%s*true') then
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
