-- Exchanges authorization codes, each once: thread N takes every Nth code of the file $CODES.
-- Run it with as many codes as the run can use; a thread that runs out sends a used code (and
-- so fails, which the non-2xx count shows).
local codes = {}
local index = 0
local threads = 0

function setup(thread)
  threads = threads + 1
  thread:set("slot", threads)
end

function init(args)
  local n = 0
  for line in io.lines(os.getenv("CODES")) do
    n = n + 1
    if n % tonumber(os.getenv("THREADS")) == slot - 1 then table.insert(codes, line) end
  end
end

function request()
  index = index + 1
  local code = codes[index] or codes[#codes]
  local body = "grant_type=authorization_code&code=" .. code .. "&redirect_uri=" .. os.getenv("REDIRECT")
  return wrk.format("POST", "/o/token", {
    ["Content-Type"] = "application/x-www-form-urlencoded",
    ["Authorization"] = os.getenv("AUTH"),
  }, body)
end
