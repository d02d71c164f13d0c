// Drives the CometD page (widget/cometd.html, served by the Rust test from its own origin)
// in the system's Chromium through playwright-core, and prints what the page saw as one
// JSON line. usage: node cometd.mjs PAGE_URL GATEWAY_BASE SERVICE MESSAGES
// CHROMIUM names the browser binary (default /usr/bin/chromium).
import { chromium } from "playwright-core";

const [pageUrl, gateway, service, messages] = process.argv.slice(2);
const executablePath = process.env.CHROMIUM || "/usr/bin/chromium";
const browser = await chromium.launch({
  executablePath,
  // The CI runs as root, where Chromium's sandbox cannot start.
  args: ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"],
});
try {
  const page = await browser.newPage();
  const problems = [];
  page.on("console", (m) => {
    if (m.type() === "error") problems.push(m.text());
  });
  page.on("pageerror", (e) => problems.push(String(e)));
  await page.goto(pageUrl);
  const result = await page.evaluate(
    ([g, s, n]) => window.runCometd(g, s, n),
    [gateway, service, Number(messages)],
  );
  result.consoleErrors = problems;
  console.log(JSON.stringify(result));
} catch (e) {
  console.error(String(e && e.stack ? e.stack : e));
  process.exitCode = 1;
} finally {
  await browser.close();
}
