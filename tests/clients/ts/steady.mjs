// The TypeScript SDK client holding one session and calling a tool every PERIOD ms for SECONDS
// seconds (through a rolling deploy, say), or until SIGTERM; prints one JSON line: calls, failures and
// their errors.
// Usage: node steady.mjs URL SECONDS PERIOD_MS
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js";

const [url, secondsText, periodText] = process.argv.slice(2);
const deadline = Date.now() + 1000 * Number(secondsText ?? "10");
const period = Number(periodText ?? "50");
const result = { connected: false, ok: 0, failed: 0, errors: [], sessionId: null };
const client = new Client({ name: "ts-steady", version: "1.0.0" });
const transport = new StreamableHTTPClientTransport(new URL(url));
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
let stopped = false;
process.on("SIGTERM", () => { stopped = true; });
try {
  await client.connect(transport);
  result.connected = true;
  result.sessionId = transport.sessionId;
  while (Date.now() < deadline && !stopped) {
    try {
      await client.callTool({ name: "add", arguments: { a: 1, b: 2 } });
      result.ok += 1;
    } catch (error) {
      result.failed += 1;
      if (result.errors.length < 5) result.errors.push(String(error).slice(0, 200));
    }
    await sleep(period);
  }
  await transport.terminateSession().catch(() => {});
} catch (error) {
  result.errors.push(`connect: ${String(error).slice(0, 200)}`);
} finally {
  await client.close().catch(() => {});
}
console.log(JSON.stringify(result));
