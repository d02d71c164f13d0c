-- The widget workload: request chats, then for each chat alternate SendMessage and Get
-- Messages with the nextPosition of the chat's latest reply. A new chat every 50 requests
-- (and until 64 are open); the 256 most recent chats are kept in play.
local chats = {}
local by_id = {}
local n = 0
local creds = '"userId":"%s","secureKey":"%s","alias":"%s","tenantName":"Environment"'

local new_chat = wrk.format("POST", "/api/v2/chats", { ["Content-Type"] = "application/json" },
  '{"tenantName":"Environment","nickname":"bench","subject":"order","userData":{"orderId":"1234"}}')

function request()
  n = n + 1
  if #chats < 64 or n % 50 == 0 then
    return new_chat
  end
  local c = chats[(n % #chats) + 1]
  local body
  local path = "/api/v2/chats/" .. c.id
  c.turn = not c.turn
  if c.turn then
    body = '{"operationName":"SendMessage",' .. string.format(creds, c.user, c.key, c.alias) ..
      ',"text":"Hello, I have a question about my order"}'
  else
    path = path .. "/messages"
    body = '{' .. string.format(creds, c.user, c.key, c.alias) ..
      ',"transcriptPosition":' .. c.next .. '}'
  end
  return wrk.format("POST", path, { ["Content-Type"] = "application/json" }, body)
end

local bad = 0
function response(status, headers, body)
  if status ~= 200 then
    if bad < 3 then
      bad = bad + 1
      io.stderr:write("unexpected reply " .. status .. ": " .. body .. "\n")
    end
    return
  end
  local id = body:match('"chatId":"([^"]+)"')
  if not id then return end
  local next = tonumber(body:match('"nextPosition":(%d+)'))
  local c = by_id[id]
  if c then
    if next then c.next = next end
    local alias = body:match('"alias":"([^"]+)"')
    if alias then c.alias = alias end
  elseif body:find('"path":"/api/v2/chats/', 1, true) then
    c = { id = id, user = body:match('"userId":"([^"]+)"'), key = body:match('"secureKey":"([^"]+)"'),
          alias = body:match('"alias":"([^"]+)"'), next = next or 1, turn = false }
    if #chats >= 256 then
      local old = table.remove(chats, 1)
      by_id[old.id] = nil
    end
    chats[#chats + 1] = c
    by_id[id] = c
  end
end
