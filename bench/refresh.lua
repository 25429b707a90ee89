-- Refresh-token rotation: each thread holds one refresh token and swaps it for the new one every
-- response, so run it with one connection per thread (-c equal to -t). The first tokens come,
-- one per line, from the file $TOKENS; $AUTH is the client's Basic credentials.
local tokens = {}
local count = 0

function setup(thread)
  if #tokens == 0 then
    for line in io.lines(os.getenv("TOKENS")) do table.insert(tokens, line) end
  end
  count = count + 1
  thread:set("token", tokens[count])
end

function request()
  local body = "grant_type=refresh_token&refresh_token=" .. token
  return wrk.format("POST", "/o/token", {
    ["Content-Type"] = "application/x-www-form-urlencoded",
    ["Authorization"] = os.getenv("AUTH"),
  }, body)
end

function response(status, headers, body)
  local next_token = body:match('"refresh_token":"([^"]+)"')
  if next_token then token = next_token end
end
