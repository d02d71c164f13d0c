-- SendMessage to open chats, round robin. The chats come from the file named by the
-- CHATS environment variable: one chat a line, "chatId userId secureKey alias tenant".
local chats = {}
local n = 0

function init(args)
  local f = assert(io.open(os.getenv("CHATS"), "r"))
  for line in f:lines() do
    local id, user, key, alias = line:match("(%S+)%s+(%S+)%s+(%S+)%s+(%S+)")
    if id then
      chats[#chats + 1] = {
        path = "/api/v2/chats/" .. id,
        body = string.format(
          '{"operationName":"SendMessage","userId":"%s","secureKey":"%s","alias":"%s","tenantName":"Environment","text":"Hello, I have a question about my order"}',
          user, key, alias),
      }
    end
  end
  f:close()
  assert(#chats > 0, "no chats in " .. os.getenv("CHATS"))
end

function request()
  n = n + 1
  local c = chats[(n % #chats) + 1]
  return wrk.format("POST", c.path, { ["Content-Type"] = "application/json" }, c.body)
end

local bad = 0
function response(status, headers, body)
  if status ~= 200 and bad < 3 then
    bad = bad + 1
    io.stderr:write("unexpected reply " .. status .. ": " .. body .. "\n")
  end
end
