// Chromium over TLS with HTTP/2: opens PAGE_URL (the gateway's widget demo page over
// https), trusting the test's leaf certificate by its public key only
// (--ignore-certificate-errors-spki-list, SPKI given), then in the page runs a chat with the
// Web API (Request Chat, SendMessage, Get Messages), opens the chat's push stream and, while
// it is open, sends CONCURRENT Get Messages at once. Prints one JSON line: what the page saw,
// with every request's nextHopProtocol and the console errors.
import { chromium } from "playwright-core";

const [pageUrl, spki, concurrent] = process.argv.slice(2);
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    `--ignore-certificate-errors-spki-list=${spki}`,
  ],
});
try {
  const page = await browser.newPage();
  const problems = [];
  page.on("console", (m) => {
    if (m.type() === "error") problems.push(m.text());
  });
  page.on("pageerror", (e) => problems.push(String(e)));
  const response = await page.goto(pageUrl);
  const result = await page.evaluate(async (n) => {
    const post = (path, body) =>
      fetch(path, {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify(body),
      }).then((r) => r.json());
    const chat = await post("/api/v2/chats", { tenantName: "Environment", nickname: "h2" });
    const auth = {
      tenantName: "Environment",
      userId: chat.userId,
      secureKey: chat.secureKey,
      alias: chat.alias,
    };
    const stream = new EventSource(
      `/api/v2/chats/${chat.chatId}/events?streamToken=${encodeURIComponent(chat.streamToken)}` +
        `&transcriptPosition=${chat.nextPosition}`,
    );
    // The stream's events up to the one carrying our message (or a time limit).
    const pushed = new Promise((resolve) => {
      stream.onmessage = (e) => {
        const data = JSON.parse(e.data);
        if ((data.messages || []).some((m) => m.text === "hello over h2")) resolve(data);
      };
      setTimeout(() => resolve(null), 15000);
    });
    const opened = await new Promise((resolve) => {
      stream.onopen = () => resolve(true);
      setTimeout(() => resolve(false), 15000);
    });
    const sent = await post(`/api/v2/chats/${chat.chatId}`, {
      ...auth,
      operationName: "SendMessage",
      text: "hello over h2",
    });
    const event = await pushed;
    // Many requests at once beside the open stream: over HTTP/1.1 a browser would queue all
    // past 6 connections per origin (the stream holding one of them).
    const refreshes = await Promise.all(
      Array.from({ length: n }, () => post(`/api/v2/chats/${chat.chatId}/messages`, auth)),
    );
    const streamOpenThroughout = stream.readyState === EventSource.OPEN;
    stream.close();
    const resources = performance
      .getEntriesByType("resource")
      .map((e) => ({ name: new URL(e.name).pathname, protocol: e.nextHopProtocol }));
    return {
      navigation: performance.getEntriesByType("navigation")[0].nextHopProtocol,
      chatStatus: chat.statusCode,
      sentStatus: sent.statusCode,
      streamOpened: opened,
      pushedText: event && event.messages.find((m) => m.text).text,
      streamOpenThroughout,
      refreshStatuses: refreshes.map((r) => r.statusCode),
      refreshSawMessage: refreshes.every((r) => JSON.stringify(r).includes("hello over h2")),
      resources,
    };
  }, Number(concurrent));
  result.pageStatus = response.status();
  result.consoleErrors = problems;
  console.log(JSON.stringify(result));
} catch (e) {
  console.error(String(e && e.stack ? e.stack : e));
  process.exitCode = 1;
} finally {
  await browser.close();
}
