-- Request Chat only, until TOTAL chats were accepted (then the thread stops): fills the
-- gateway with open chats for the memory measurement.
local total = tonumber(os.getenv("TOTAL") or "100000")
local done = 0
local sent = 0
local req = wrk.format("POST", "/api/v2/chats", { ["Content-Type"] = "application/json" },
  '{"tenantName":"Environment","nickname":"bench","subject":"order","userData":{"orderId":"1234"}}')

function request()
  sent = sent + 1
  return req
end

function response(status, headers, body)
  if status == 200 then done = done + 1 end
  if done >= total then wrk.thread:stop() end
end
