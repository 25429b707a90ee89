-- Collects authorization codes: GET /o/authorize with a signed-in session cookie ($COOKIE) for a
-- skip-consent client; each 302 carries a fresh code, appended to $CODES (one file per thread).
local out

function setup(thread)
  thread:set("id", tostring(math.random(1, 1e9)))
end

function init(args)
  out = io.open(os.getenv("CODES") .. "." .. id, "w")
  wrk.headers["Cookie"] = os.getenv("COOKIE")
end

function response(status, headers, body)
  local location = headers["location"] or headers["Location"]
  if location then
    local code = location:match("[?&]code=([^&]+)")
    if code then out:write(code, "\n"); out:flush() end
  end
end
