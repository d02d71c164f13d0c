// Drives the gateway's own chat widget (widget/ at the repository root) on the gateway's
// demo page in the system's Chromium through playwright-core, as a customer would: the
// pre-chat form, a conversation with the simulated agent, a reload, a second tab, a network
// outage, a file, an XSS payload, the end of the chat and a "leave a message" e-mail.
//
// usage: node chat_widget.mjs '{"page": URL, "failover": bool, "screenshot": PATH|null,
//                              "embed": URL|null}'
// Talks to the Rust test over stdio: `STEP {json}` lines it must answer with one line on
// stdin ("ok" or a JSON value), then one `RESULT {json}` line with what the widget did.
// CHROMIUM names the browser binary (default /usr/bin/chromium).
import { createInterface } from "node:readline";
import { chromium } from "playwright-core";

const options = JSON.parse(process.argv[2]);
const reader = createInterface({ input: process.stdin });
const lines = reader[Symbol.asyncIterator]();
const log = [];

/** Tells the Rust test where we are and waits for its answer. */
async function step(name, data = {}) {
  console.log("STEP " + JSON.stringify({ step: name, ...data }));
  const answer = await lines.next();
  if (answer.done) throw new Error(`no answer to step ${name}`);
  const text = answer.value.trim();
  if (text.startsWith("fail")) throw new Error(`the test refused step ${name}: ${text}`);
  return text;
}

function note(what) {
  log.push(`${new Date().toISOString()} ${what}`);
}

const executablePath = process.env.CHROMIUM || "/usr/bin/chromium";
const browser = await chromium.launch({
  executablePath,
  // The CI runs as root, where Chromium's sandbox cannot start.
  args: ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"],
});
const result = { problems: [], dialogs: [], log };
let context = null;
try {
  context = await browser.newContext({ viewport: { width: 1280, height: 800 }, acceptDownloads: true });
  const watch = (page, tab) => {
    page.on("console", (m) => {
      if (m.type() === "error") result.problems.push(`${tab}: ${m.text()} (${m.location().url})`);
    });
    page.on("pageerror", (e) => result.problems.push(`${tab}: ${e}`));
    page.on("response", (r) => {
      if (r.status() >= 400) result.problems.push(`${tab}: HTTP ${r.status()} for ${r.request().method()} ${r.url()}`);
    });
    page.on("dialog", (d) => {
      result.dialogs.push(`${d.type()}: ${d.message()}`);
      d.dismiss().catch(() => {});
    });
  };
  const page = await context.newPage();
  watch(page, "tab 1");
  await page.goto(options.page);
  const state = (p = page) => p.evaluate(() => window.gatewayChatWidget && window.gatewayChatWidget.state());
  const shadowEval = (fn, arg, p = page) =>
    p.evaluate(([src, a]) => {
      const root = document.querySelector("[data-gateway-chat]").shadowRoot;
      return new Function("root", "arg", src)(root, a);
    }, [fn, arg]);
  /** The transcript as shown: [index, class, text] of every event element. */
  const shown = (p = page) =>
    shadowEval(
      "return Array.from(root.querySelectorAll('.transcript:not(.pending-list) > li')).map(li => [Number(li.dataset.index || -1), li.className, li.textContent])",
      null,
      p,
    );

  /** Leave a message: the e-mail form, a file with it, and the reference it was given,
   * which the Rust test looks for in the mock outbox. */
  async function leaveMessage() {
    await page.getByRole("button", { name: "Leave a message" }).click();
    const mail = {
      "First name (required)": "Ann",
      "Last name (required)": "Lee",
      "E-mail (required)": "ann@example.com",
      "Subject (required)": "About order 42",
      "Message (required)": "Please call me back about order 42. <b>not bold</b>",
    };
    for (const [label, value] of Object.entries(mail)) await page.getByLabel(label, { exact: true }).fill(value);
    await page.getByLabel("Attachment (optional)").setInputFiles({ name: "receipt.txt", mimeType: "text/plain", buffer: Buffer.from("receipt 42") });
    await page.getByRole("button", { name: "Send message" }).click();
    const done = page.locator("[data-interaction-id]");
    await done.waitFor({ timeout: 30000 });
    result.interactionId = await done.getAttribute("data-interaction-id");
    await step("email", { interactionId: result.interactionId });
  }

  // The launcher, then the pre-chat form: the nickname field has the focus.
  const launcher = page.getByRole("button", { name: /open chat/i });
  await launcher.waitFor();
  await launcher.click();
  journey: {
  if (options.closed) {
    // Outside the opening hours: no chat on offer, only a message.
    await page.getByText("We are closed right now.", { exact: false }).waitFor();
    result.closedText = await page.getByText("We are closed right now.", { exact: false }).textContent();
    result.startButtons = await page.getByRole("button", { name: "Start chat" }).count();
    result.focusOnOpen = await shadowEval("const a = root.activeElement; return a ? a.textContent : null;");
    await leaveMessage();
    break journey;
  }
  result.focusOnOpen = await shadowEval("const a = root.activeElement; return a ? a.name || a.textContent : null;");
  const form = {
    "Nickname (required)": "Ann",
    "First name": "Ann",
    "Last name": "Lee",
    "E-mail": "ann@example.com",
    Subject: "Order 42",
  };
  // An empty nickname is refused by the form itself.
  await page.getByRole("button", { name: "Start chat" }).click();
  result.emptyNicknameError = await shadowEval("return root.querySelector('[role=alert]').textContent");
  for (const [label, value] of Object.entries(form)) await page.getByLabel(label, { exact: true }).fill(value);
  // Keyboard: Enter in the form starts the chat.
  await page.getByLabel("Subject", { exact: true }).press("Enter");
  await page.locator("li.msg.agent").first().waitFor({ timeout: 30000 });
  note("agent greeting shown");
  // This tab reads the chat (it is the only one).
  await page.waitForFunction(() => window.gatewayChatWidget.state().leader);
  const started = await state();
  result.chatId = started.chatId;
  result.aliasAtStart = started.alias;
  result.transport = started.transport;

  // Typing, key by key: typing notifications are debounced, not one per key.
  const input = page.getByRole("textbox", { name: /^Message \(Enter/ });
  await input.pressSequentially("Where is my order 42? It was due on Monday.", { delay: 15 });
  await input.press("Enter");
  await page.locator("li.msg.customer[data-index]", { hasText: "Where is my order 42?" }).waitFor();
  if (options.agentTyping) {
    await page.getByText("Agent is typing…").waitFor({ timeout: 15000 });
    result.sawAgentTyping = true;
  }
  await page.locator("li.msg.agent").nth(1).waitFor({ timeout: 30000 });
  result.typingHiddenAfterReply = await shadowEval("return root.querySelector('.typing').hidden");
  note("agent answered");

  // XSS: shown as text, no element made from it, no dialog.
  const xss = "<img src=x onerror=alert(1)>";
  await input.fill(xss);
  await input.press("Enter");
  await page.locator("li.msg.customer[data-index]", { hasText: xss }).waitFor();
  result.xssShownAsText = await shadowEval(
    "return Array.from(root.querySelectorAll('li.msg.customer .text')).some(p => p.textContent === arg) && root.querySelectorAll('img').length === 0 && document.querySelectorAll('img').length === 0",
    xss,
  );

  // A URL pushed into the chat (SendUrl) is a link; a javascript: one would not be.
  await page.evaluate(async () => {
    const key = Object.keys(sessionStorage).find((k) => k.endsWith(":chat"));
    const c = JSON.parse(sessionStorage.getItem(key));
    const body = { userId: c.userId, secureKey: c.secureKey, alias: c.alias, tenantName: c.tenantName, operationName: "SendUrl", pushUrl: "https://example.com/help?q=1" };
    const r = await fetch(`/api/v2/chats/${c.chatId}`, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(body) });
    if (!r.ok) throw new Error("SendUrl: " + (await r.text()));
  });
  await page.locator('a[href="https://example.com/help?q=1"]').waitFor();
  result.linkRel = await page.locator('a[href="https://example.com/help?q=1"]').getAttribute("rel");
  result.unsafeLinks = await page.evaluate(() =>
    ["javascript:alert(1)", "data:text/html,x", "ftp://x.example/", "https://a b", "vbscript:x"].map((u) => window.gatewayChatWidget.safeLink(u)),
  );

  // A file, with the limits shown, then downloaded again; or, where the chat's backend
  // transfers no files, no file button.
  await page.waitForFunction(() => window.gatewayChatWidget.state().files !== "loading");
  result.files = (await state()).files;
  result.fileButtons = await page.getByRole("button", { name: "Send a file" }).count();
  if (options.files) {
  const limitsText = page.locator(".file-limits");
  await limitsText.waitFor();
  result.fileLimits = await limitsText.textContent();
  await page.locator('input[type="file"]').first().setInputFiles({ name: "notes.txt", mimeType: "text/plain", buffer: Buffer.from("widget file content \u00e9") });
  await page.locator("li.msg.file", { hasText: "notes.txt" }).waitFor();
  const [download] = await Promise.all([
    page.waitForEvent("download"),
    page.getByRole("button", { name: "Download notes.txt" }).click(),
  ]);
  const stream = await download.createReadStream();
  const chunks = [];
  for await (const c of stream) chunks.push(c);
  result.downloaded = Buffer.concat(chunks).toString("utf8");
  result.downloadName = download.suggestedFilename();
  note("file up and down");
  }

  // Minimised, the window counts what the agent says (the message that makes the agent
  // answer is sent by the page while the window is closed).
  const before = await page.locator("li.msg.agent").count();
  await page.getByRole("button", { name: "Minimise chat" }).click();
  await page.evaluate(async () => {
    const key = Object.keys(sessionStorage).find((k) => k.endsWith(":chat"));
    const c = JSON.parse(sessionStorage.getItem(key));
    const body = { userId: c.userId, secureKey: c.secureKey, alias: c.alias, tenantName: c.tenantName, operationName: "SendMessage", text: "Thanks, one more question" };
    const r = await fetch(`/api/v2/chats/${c.chatId}`, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(body) });
    if (!r.ok) throw new Error("SendMessage: " + (await r.text()));
  });
  await page.waitForFunction((n) => {
    const root = document.querySelector("[data-gateway-chat]").shadowRoot;
    return root.querySelectorAll("li.msg.agent").length > n;
  }, before, { timeout: 30000 });
  result.launcherWhileMinimised = await launcher.getAttribute("aria-label");
  result.unreadWhileMinimised = (await state()).unread;
  await launcher.click();
  result.unreadAfterOpen = (await state()).unread;

  // A reload: the same conversation, each event once.
  const beforeReload = await shown();
  await page.reload();
  await page.locator("li.msg.agent").nth(2).waitFor({ timeout: 30000 });
  await page.waitForFunction((n) => window.gatewayChatWidget.state().position > n, Math.max(...beforeReload.map((e) => e[0])));
  const afterReload = await shown();
  result.reloadKeptTranscript = JSON.stringify(afterReload.slice(0, beforeReload.length)) === JSON.stringify(beforeReload);
  result.openAfterReload = (await state()).open;
  note("reloaded");

  // A second tab: the same chat, and one reader for both.
  const tab2 = await context.newPage();
  watch(tab2, "tab 2");
  await tab2.goto(options.page);
  await tab2.getByRole("button", { name: /open chat/i }).click();
  await tab2.locator("li.msg.agent").nth(2).waitFor({ timeout: 30000 });
  await tab2.getByRole("textbox", { name: /^Message \(Enter/ }).fill("Sent from my second tab");
  await tab2.getByRole("textbox", { name: /^Message \(Enter/ }).press("Enter");
  await page.locator("li.msg.customer[data-index]", { hasText: "Sent from my second tab" }).waitFor({ timeout: 30000 });
  await tab2.locator("li.msg.customer[data-index]", { hasText: "Sent from my second tab" }).waitFor({ timeout: 30000 });
  const [s1, s2] = [await state(), await state(tab2)];
  result.tabs = { first: s1, second: s2 };
  result.readers = [s1.leader, s2.leader].filter(Boolean).length;
  result.secondTabSameChat = s2.chatId === s1.chatId;
  await tab2.close();
  note("second tab");

  // The network drops while the customer sends a message: the widget says so, keeps
  // trying, and the message arrives once when the network is back.
  await context.setOffline(true);
  await input.fill("Back online");
  await input.press("Enter");
  await page.getByText("Reconnecting…").waitFor({ timeout: 15000 });
  result.statusOffline = await shadowEval("return root.querySelector('.status').textContent");
  result.pendingWhileOffline = await page.locator("li.msg.pending", { hasText: "Back online" }).count();
  await page.waitForTimeout(2000);
  await context.setOffline(false);
  await page.locator("li.msg.customer[data-index]", { hasText: "Back online" }).waitFor({ timeout: 60000 });
  result.statusAfterOutage = await shadowEval("return root.querySelector('.status').textContent");
  note("after the outage");

  if (options.failover) {
    const alias = (await state()).alias;
    await step("kill", { alias });
    note(`killed the chat server of alias ${alias}`);
    const t0 = Date.now();
    await input.fill("Are you still there after the failover?");
    await input.press("Enter");
    await page.locator("li.msg.customer[data-index]", { hasText: "after the failover" }).waitFor({ timeout: 60000 });
    const agents = await page.locator("li.msg.agent").count();
    await page.waitForFunction((n) => {
      const root = document.querySelector("[data-gateway-chat]").shadowRoot;
      return root.querySelectorAll("li.msg.agent").length > n;
    }, agents - 1, { timeout: 60000 });
    result.failoverMs = Date.now() - t0;
    result.aliasAfterFailover = (await state()).alias;
    note("carried on after the failover");
  }

  // The server's transcript, read as any client would, then what the widget shows once it
  // has read as far: every event shown once, in order.
  result.transcript = await page.evaluate(async () => {
    const key = Object.keys(sessionStorage).find((k) => k.endsWith(":chat"));
    const c = JSON.parse(sessionStorage.getItem(key));
    const all = [];
    let position = 1;
    for (let i = 0; i < 20; i++) {
      const r = await (await fetch(`/api/v2/chats/${c.chatId}/messages`, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ userId: c.userId, secureKey: c.secureKey, alias: c.alias, tenantName: c.tenantName, transcriptPosition: position }) })).json();
      all.push(...r.messages.map((m) => ({ index: m.index, type: m.type, from: m.from.type, text: m.text })));
      if (!r.messages.length || r.nextPosition === position) break;
      position = r.nextPosition;
    }
    return all;
  });
  const last = Math.max(...result.transcript.map((e) => e.index));
  await page.waitForFunction((n) => window.gatewayChatWidget.state().position > n, last, { timeout: 30000 });
  const final = await shown();
  result.shownIndexes = final.map((e) => e[0]).filter((i) => i > 0);
  result.customerTexts = final.filter((e) => e[1].includes("customer") && e[1].includes("msg") && !e[1].includes("file") && !e[1].includes("link"))
    .map((e) => e[2].replace(/^You\s*(\d{1,2}:\d{2}(\s?[AP]M)?)?/, ""));

  // Narrow: 320 px wide, nothing sticks out.
  await page.setViewportSize({ width: 320, height: 640 });
  await page.waitForTimeout(200);
  result.narrow = await page.evaluate(() => {
    const host = document.querySelector("[data-gateway-chat]");
    const panel = host.shadowRoot.querySelector(".panel").getBoundingClientRect();
    const send = host.shadowRoot.querySelector(".send").getBoundingClientRect();
    return { panelLeft: panel.left, panelRight: panel.right, sendRight: send.right, scrollWidth: document.documentElement.scrollWidth };
  });
  if (options.screenshot) {
    await page.setViewportSize({ width: 480, height: 720 });
    await page.waitForTimeout(200);
    await page.screenshot({ path: options.screenshot });
  }
  await page.setViewportSize({ width: 1280, height: 800 });

  // End the chat: a confirmation first.
  await page.getByRole("button", { name: "End chat" }).click();
  await page.getByRole("alertdialog").waitFor();
  result.confirmFocused = await shadowEval("return root.activeElement && root.activeElement.textContent");
  await page.getByRole("alertdialog").getByRole("button", { name: "End chat" }).click();
  await page.getByText("You ended the chat.").waitFor();
  result.ended = (await state()).ended;
  result.credentialsLeft = await page.evaluate(() => Object.keys(sessionStorage).filter((k) => k.endsWith(":chat")).length);

  await leaveMessage();

  // The same widget on another site's page, by the one-line snippet (CORS).
  if (options.embed) {
    const other = await context.newPage();
    watch(other, "embed");
    await other.goto(options.embed);
    await other.getByRole("button", { name: /open chat/i }).click();
    await other.getByLabel("Nickname (required)").fill("Bo");
    await other.getByRole("button", { name: "Start chat" }).click();
    await other.locator("li.msg.system, li.msg.agent").first().waitFor({ timeout: 30000 });
    result.embedOrigin = await other.evaluate(() => location.origin);
    result.embedChat = (await state(other)).chatId;
  }
  }
  result.log = log;
  console.log("RESULT " + JSON.stringify(result));
} catch (e) {
  // What each tab's widget was doing, for the failure's account.
  if (context) {
    result.tabStates = await Promise.all(context.pages().map((p) => p.evaluate(() => {
      const w = window.gatewayChatWidget;
      const root = document.querySelector("[data-gateway-chat]");
      return { state: w && w.state(), shown: root ? Array.from(root.shadowRoot.querySelectorAll(".transcript > li")).map((li) => li.textContent) : null };
    }).catch((x) => String(x))));
  }
  console.error(String(e && e.stack ? e.stack : e));
  console.error(log.join("\n"));
  console.log("RESULT " + JSON.stringify({ ...result, failed: String(e && e.message ? e.message : e) }));
  process.exitCode = 1;
} finally {
  await browser.close();
  // stdin stays open (the test holds it): without this the process would wait on it.
  reader.close();
  process.stdin.destroy();
}
