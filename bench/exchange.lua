-- Exchanges authorization codes, each once: thread N takes every Nth code of the file $CODES.
-- Run it with as many codes as the run can use; a thread that runs out sends its last code
-- again (and so fails, which the non-2xx count shows).
--
-- Codes are read from the file as requests go, not loaded in init: wrk starts each thread as
-- soon as its init returns but starts its clock only after the last one's, so requests sent
-- while a later thread still loads its codes would count without their time (with 400,000
-- codes the two threads took 0.84 s to load theirs). The request's head is built once: wrk.format
-- (a table of headers built per call) cost the load generator about 3 µs more per request.
local lines
local head
local redirect
local stride
local last_code = "none"
local threads = 0

-- The next line of the codes file, or nil once it has run out.
local function next_line()
  local line = lines and lines()
  if not line then lines = nil end
  return line
end

function setup(thread)
  threads = threads + 1
  thread:set("slot", threads)
end

function init(args)
  head = "POST /o/token HTTP/1.1\r\nHost: " .. wrk.headers["Host"] ..
    "\r\nContent-Type: application/x-www-form-urlencoded\r\nAuthorization: " .. os.getenv("AUTH") ..
    "\r\nContent-Length: "
  redirect = os.getenv("REDIRECT")
  stride = tonumber(os.getenv("THREADS"))
  lines = io.lines(os.getenv("CODES"))
  for _ = 2, slot do next_line() end -- thread N starts at the Nth code
end

function request()
  local code = next_line()
  if code then
    last_code = code
    for _ = 2, stride do next_line() end -- the next codes are the other threads'
  end
  local body = "grant_type=authorization_code&code=" .. last_code .. "&redirect_uri=" .. redirect
  return head .. #body .. "\r\n\r\n" .. body
end
