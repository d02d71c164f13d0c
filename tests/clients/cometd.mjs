// Drives the CometD page (widget/cometd.html, served by the Rust test from its own origin)
// in the system's Chromium and prints what the page saw as one JSON line.
// usage: node cometd.mjs PAGE_URL GATEWAY_BASE SERVICE MESSAGES
import { runPage } from "./run-page.mjs";

const [pageUrl, gateway, service, messages] = process.argv.slice(2);
await runPage(pageUrl, "runCometd", [gateway, service, Number(messages)]);
