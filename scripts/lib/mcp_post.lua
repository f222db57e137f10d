-- wrk script: POST one JSON-RPC request per call with a unique id.
-- JSON-RPC ids must be unique within an MCP session: responses are routed
-- back to their HTTP request by id, so a load tool that repeats one body
-- (hey, ab) makes concurrent requests on a session wait for each other.
-- Environment: MCP_BODY (a JSON-RPC request whose id is written as
-- "__ID__"), MCP_TOKEN, MCP_SESSION (optional).
local threads = {}
local counter = 0
local body = os.getenv("MCP_BODY")

-- Each thread numbers its requests from its own billion.
function setup(thread)
  thread:set("id_base", #threads * 1000000000)
  table.insert(threads, thread)
end

function init(args)
  wrk.method = "POST"
  wrk.headers["Authorization"] = "Bearer " .. os.getenv("MCP_TOKEN")
  wrk.headers["Content-Type"] = "application/json"
  wrk.headers["Accept"] = "application/json, text/event-stream"
  wrk.headers["MCP-Protocol-Version"] = "2025-06-18"
  local sid = os.getenv("MCP_SESSION")
  if sid and sid ~= "" then
    wrk.headers["Mcp-Session-Id"] = sid
  end
end

function request()
  counter = counter + 1
  local b = string.gsub(body, "__ID__", tostring((id_base or 0) + counter))
  return wrk.format(nil, nil, nil, b)
end
