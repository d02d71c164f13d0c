// Drives the widget page (widget/index.html, served by the Rust test from its own origin)
// in the system's Chromium and prints what the widget saw as one JSON line.
// usage: node browser.mjs PAGE_URL GATEWAY_BASE SERVICE APIKEY
import { runPage } from "./run-page.mjs";

const [pageUrl, gateway, service, apikey] = process.argv.slice(2);
await runPage(pageUrl, "runConversation", [gateway, service, apikey]);
