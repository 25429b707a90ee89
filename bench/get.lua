-- A fixed GET, with Authorization from $AUTH when set.
local auth = os.getenv("AUTH")
if auth and auth ~= "" then wrk.headers["Authorization"] = auth end
