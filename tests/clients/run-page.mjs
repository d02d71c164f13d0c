// What every one-shot browser test script does: launch the system's Chromium through
// playwright-core (CHROMIUM names the binary, default /usr/bin/chromium), open PAGE_URL,
// call one function the page defines with the given arguments, and print its result as one
// JSON line with the console errors the page logged (`consoleErrors`). A failure prints the
// error and exits non-zero.
import { chromium } from "playwright-core";

export async function runPage(pageUrl, fn, args) {
  const browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
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
    const result = await page.evaluate(([f, a]) => window[f](...a), [fn, args]);
    result.consoleErrors = problems;
    console.log(JSON.stringify(result));
  } catch (e) {
    console.error(String(e && e.stack ? e.stack : e));
    process.exitCode = 1;
  } finally {
    await browser.close();
  }
}
