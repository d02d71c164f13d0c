// Drives widget/sse.html (served by tests/clients/push.rs from its own origin) in the system's
// Chromium through playwright-core. Reads one JSON command a line on stdin and answers one
// JSON line on stdout: {"op":"start","base":…} | {"op":"send","text":…} |
// {"op":"waitFor","expr":…,"timeoutMs":…} | {"op":"complete"} | {"op":"report"} | {"op":"quit"}.
// usage: node push.mjs PAGE_URL   (CHROMIUM names the browser binary)
import readline from "node:readline";
import { chromium } from "playwright-core";

const [pageUrl] = process.argv.slice(2);
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  // The CI runs as root, where Chromium's sandbox cannot start.
  args: ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"],
});
const page = await browser.newPage();
const console_ = [];
const requests = [];
page.on("console", (m) => console_.push(`${m.type()}: ${m.text()}`));
page.on("pageerror", (e) => console_.push(`pageerror: ${e}`));
page.on("request", (r) => requests.push(`${r.method()} ${r.url()}`));
await page.goto(pageUrl);

const answer = (value) => process.stdout.write(JSON.stringify(value) + "\n");
const rl = readline.createInterface({ input: process.stdin });
for await (const line of rl) {
  const cmd = JSON.parse(line);
  try {
    let out = null;
    switch (cmd.op) {
      case "start":
        out = await page.evaluate((b) => window.startChat(b), cmd.base);
        break;
      case "send":
        out = await page.evaluate((t) => window.send(t), cmd.text);
        break;
      case "complete":
        out = await page.evaluate(() => window.complete());
        break;
      case "waitFor":
        await page.waitForFunction(cmd.expr, null, { timeout: cmd.timeoutMs, polling: 100 });
        out = true;
        break;
      case "report":
        out = await page.evaluate(() => window.report());
        out.requests = requests;
        out.console = console_;
        break;
      case "quit":
        answer({ ok: true });
        await browser.close();
        process.exit(0);
    }
    answer({ ok: out });
  } catch (e) {
    answer({ error: String(e && e.stack ? e.stack : e) });
  }
}
await browser.close();
