// The TypeScript SDK client as a user writes it: connect (initialize + notifications/initialized),
// then ROUNDS rounds of tools/list + tools/call `count` on one session; prints one JSON line.
// Usage: node rounds.mjs URL ROUNDS
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js";

const [url, roundsText] = process.argv.slice(2);
const rounds = Number(roundsText ?? "20");
const result = { connected: false, ok: 0, errors: [], counts: [] };
const client = new Client({ name: "ts-rounds", version: "1.0.0" });
const transport = new StreamableHTTPClientTransport(new URL(url));
try {
  await client.connect(transport);
  result.connected = true;
  for (let i = 0; i < rounds; i++) {
    try {
      await client.listTools();
      const call = await client.callTool({ name: "count", arguments: {} });
      result.counts.push(Number(call.content[0].text));
      result.ok += 1;
    } catch (error) {
      result.errors.push(String(error).slice(0, 200));
    }
  }
  await transport.terminateSession();
} catch (error) {
  result.errors.push(`connect: ${String(error).slice(0, 200)}`);
} finally {
  await client.close().catch(() => {});
}
console.log(JSON.stringify(result));
