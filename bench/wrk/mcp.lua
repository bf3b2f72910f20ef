-- MCP traffic for wrk: `wrk -t N -c N -s mcp.lua URL -- MODE`, MODE one of
--   stateful   legacy 2025-11-25 client: `initialize` and `notifications/initialized` once, then
--              `tools/call` on that session. Run with as many threads as connections: a wrk
--              thread then owns exactly one connection, so this thread's Lua state is the
--              connection's state and the session lives on the worker that serves the connection
--              (with `--workers 2` too). A 404 (the session is gone, e.g. after a reconnect that
--              landed on another worker) starts a new session and is counted as `lost`.
--   stateless  legacy `tools/call` with no session id, for a stateless server.
--   modern     2026-07-28 `tools/call`: no handshake, no session id.
--   stale      legacy `tools/call` carrying an id no worker issued (a worker hop as the worker
--              sees it), one id per connection: a stateful server answers 404 "Session not
--              found" (policy `spec`), which is what counts as correct here.
--   session    legacy `tools/call` on sessions opened beforehand: connection i uses the i-th of
--              the comma-separated ids in the environment variable BENCH_SESSION_IDS (the
--              continuity benchmark sends them to their owner, or to a worker that forwards).
-- Every response is checked (a fast 404 must not count as throughput); `done` prints one line
-- `BENCH_RESULT {json}` that bench/load.py parses.

local CALL = '{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"add","arguments":{"a":1,"b":2}}}'
local INIT = '{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25",'
  .. '"capabilities":{},"clientInfo":{"name":"wrk-bench","version":"1.0"}}}'
local INITIALIZED = '{"jsonrpc":"2.0","method":"notifications/initialized"}'
local MODERN_CALL = '{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"add","arguments":{"a":1,"b":2},'
  .. '"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28",'
  .. '"io.modelcontextprotocol/clientInfo":{"name":"wrk-bench","version":"1.0"},'
  .. '"io.modelcontextprotocol/clientCapabilities":{}}}}'

local function headers(extra)
  local h = {["Content-Type"] = "application/json", ["Accept"] = "application/json, text/event-stream"}
  for k, v in pairs(extra or {}) do h[k] = v end
  return h
end

local threads = {}
function setup(thread)
  table.insert(threads, thread)
  thread:set("thread_index", #threads)
end

-- Globals, so that `done` can read them with thread:get().
ok, bad, opened, lost = 0, 0, 0, 0

local mode
local in_flight            -- "init", "initialized" or "call": what the request on the wire is
local session_call         -- the formatted tools/call request of this connection's session
local pending_initialized  -- the formatted notifications/initialized, sent once after initialize
local static_call          -- the formatted request of the stateless, modern and stale modes
local expected = 200       -- the status a correct answer to a call has

function init(args)
  mode = args[1] or "stateful"
  if mode == "stateless" then
    static_call = wrk.format("POST", nil, headers({["Mcp-Protocol-Version"] = "2025-11-25"}), CALL)
  elseif mode == "modern" then
    static_call = wrk.format("POST", nil, headers({
      ["Mcp-Protocol-Version"] = "2026-07-28", ["Mcp-Method"] = "tools/call", ["Mcp-Name"] = "add",
    }), MODERN_CALL)
  elseif mode == "stale" then
    -- A table's address differs per thread: an id unique to this connection, visible ASCII.
    local id = "bench-stale-" .. string.match(tostring({}), "0x(%x+)") .. "-" .. os.time()
    static_call = wrk.format("POST", nil, headers({
      ["Mcp-Session-Id"] = id, ["Mcp-Protocol-Version"] = "2025-11-25",
    }), CALL)
    expected = 404
  elseif mode == "session" then
    local ids = {}
    for id in string.gmatch(os.getenv("BENCH_SESSION_IDS") or "", "[^,]+") do table.insert(ids, id) end
    local id = ids[((thread_index or 1) - 1) % #ids + 1]
    static_call = wrk.format("POST", nil, headers({
      ["Mcp-Session-Id"] = id, ["Mcp-Protocol-Version"] = "2025-11-25",
    }), CALL)
  elseif mode ~= "stateful" then
    error("unknown mode " .. mode)
  end
end

function request()
  if static_call then
    in_flight = "call"
    return static_call
  end
  if session_call == nil then
    in_flight = "init"
    return wrk.format("POST", nil, headers(), INIT)
  end
  if pending_initialized then
    in_flight = "initialized"
    local r = pending_initialized
    pending_initialized = nil
    return r
  end
  in_flight = "call"
  return session_call
end

function response(status, hdrs, body)
  if in_flight == "call" then
    if expected == 404 and status == 404 and string.find(body, "Session not found", 1, true) then
      ok = ok + 1
    elseif expected == 200 and status == 200 and string.find(body, '"result"', 1, true) then
      ok = ok + 1
    else
      bad = bad + 1
      if status == 404 and session_call then
        session_call = nil
        lost = lost + 1
      end
    end
  elseif in_flight == "init" then
    local sid = hdrs["mcp-session-id"]
    if status == 200 and sid then
      opened = opened + 1
      local h = {["Mcp-Session-Id"] = sid, ["Mcp-Protocol-Version"] = "2025-11-25"}
      pending_initialized = wrk.format("POST", nil, headers(h), INITIALIZED)
      session_call = wrk.format("POST", nil, headers(h), CALL)
    else
      bad = bad + 1
    end
  elseif status ~= 202 then
    bad = bad + 1
  end
end

function done(summary, latency, requests)
  local totals = {ok = 0, bad = 0, opened = 0, lost = 0}
  for _, thread in ipairs(threads) do
    for name, value in pairs(totals) do
      totals[name] = value + (thread:get(name) or 0)
    end
  end
  local e = summary.errors
  io.write(string.format(
    'BENCH_RESULT {"requests":%d,"duration_us":%d,"p50_us":%d,"p90_us":%d,"p99_us":%d,"max_us":%d,'
      .. '"ok":%d,"bad":%d,"opened":%d,"lost":%d,'
      .. '"connect_errors":%d,"read_errors":%d,"write_errors":%d,"status_errors":%d,"timeouts":%d}\n',
    summary.requests, summary.duration,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max,
    totals.ok, totals.bad, totals.opened, totals.lost,
    e.connect, e.read, e.write, e.status, e.timeout))
end
