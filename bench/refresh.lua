-- Refresh-token rotation: each connection rotates one chain, swapping its refresh token for the
-- new one in every response. Thread N takes every Nth first token of the file $TOKENS (one per
-- line; as many as there are connections); $AUTH is the client's Basic credentials. A thread
-- keeps the tokens it may send next in a queue: a request takes one, its response puts the
-- successor back, so each token is sent once whichever connection sends it.
--
-- The request's head is built once, in init: the load generator shares the server's two cores,
-- and wrk.format (a table of headers built per call) cost it about 3 µs more CPU per request.
local ready = {}
local first, last = 1, 0
local threads = 0
local head
local marker = '"refresh_token":"'

function setup(thread)
  threads = threads + 1
  thread:set("slot", threads)
end

function init(args)
  head = "POST /o/token HTTP/1.1\r\nHost: " .. wrk.headers["Host"] ..
    "\r\nContent-Type: application/x-www-form-urlencoded\r\nAuthorization: " .. os.getenv("AUTH") ..
    "\r\nContent-Length: "
  local n = 0
  if slot == 1 then
    -- wrk calls request() once in the first thread's state, right after init, to inspect the
    -- request it builds, and never sends it: that call takes this placeholder.
    last = last + 1
    ready[last] = "placeholder-for-wrk-inspecting-the-request"
  end
  for line in io.lines(os.getenv("TOKENS")) do
    n = n + 1
    if n % tonumber(os.getenv("THREADS")) == slot - 1 then
      last = last + 1
      ready[last] = line
    end
  end
end

function request()
  local token = ready[first]
  if token then
    ready[first] = nil
    first = first + 1
  else
    token = "none-left" -- a chain broke (its answer had no token): the non-2xx count shows it
  end
  local body = "grant_type=refresh_token&refresh_token=" .. token
  return head .. #body .. "\r\n\r\n" .. body
end

function response(status, headers, body)
  -- The token is what follows the marker up to the next quote (a body cut short has none).
  local _, at = body:find(marker, 1, true)
  local close = at and body:find('"', at + 1, true)
  if close and close > at + 1 then
    last = last + 1
    ready[last] = body:sub(at + 1, close - 1)
  end
end
