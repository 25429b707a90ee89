-- Exchanges authorization codes, each once: thread N takes every Nth code of the file $CODES.
-- Run it with as many codes as the run can use; a thread that runs out sends a used code (and
-- so fails, which the non-2xx count shows).
--
-- Every request is built in init, before wrk starts its clock: the load generator shares the
-- server's two cores, and a request formatted per call (wrk.format builds a table of headers
-- each time) cost it about 3 µs more CPU per request than the reference's fixed one.
local requests = {}
local index = 0
local threads = 0

function setup(thread)
  threads = threads + 1
  thread:set("slot", threads)
end

function init(args)
  local head = "POST /o/token HTTP/1.1\r\nHost: " .. wrk.headers["Host"] ..
    "\r\nContent-Type: application/x-www-form-urlencoded\r\nAuthorization: " .. os.getenv("AUTH") ..
    "\r\nContent-Length: "
  local redirect = os.getenv("REDIRECT")
  local n = 0
  for line in io.lines(os.getenv("CODES")) do
    n = n + 1
    if n % tonumber(os.getenv("THREADS")) == slot - 1 then
      local body = "grant_type=authorization_code&code=" .. line .. "&redirect_uri=" .. redirect
      table.insert(requests, head .. #body .. "\r\n\r\n" .. body)
    end
  end
end

function request()
  index = index + 1
  return requests[index] or requests[#requests]
end
