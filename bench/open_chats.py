"""Opens N chats on a gateway over one keep-alive connection and prints one line a chat:
"chatId userId secureKey alias" (the input of bench/lua/send_message.lua)."""
import http.client
import json
import sys

host, port, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
conn = http.client.HTTPConnection(host, port)
body = json.dumps({"tenantName": "Environment", "nickname": "bench"})
for _ in range(n):
    conn.request("POST", "/api/v2/chats", body, {"Content-Type": "application/json"})
    reply = json.loads(conn.getresponse().read())
    if reply.get("statusCode") != 0:
        sys.exit(f"Request Chat refused: {reply}")
    print(reply["chatId"], reply["userId"], reply["secureKey"], reply["alias"])
