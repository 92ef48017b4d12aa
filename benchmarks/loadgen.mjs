// A small HTTP/2 gRPC load generator for the one scenario h2load cannot drive: Check with a
// fresh random token on every call (h2load posts one fixed body). Node's built-in http2 only.
//
//   node loadgen.mjs --target 127.0.0.1:50051 --duration 5 --connections 4 --streams 16 \
//        [--body body.bin | --random-tokens --plugin catalog]
//
// Prints one JSON object: requests, failures, rps, p50_us, p99_us.
import http2 from "node:http2";
import { randomBytes } from "node:crypto";
import { readFileSync } from "node:fs";

const args = Object.fromEntries(
  process.argv.slice(2).reduce((pairs, arg, i, all) => {
    if (arg.startsWith("--")) pairs.push([arg.slice(2), all[i + 1]?.startsWith("--") || all[i + 1] === undefined ? "true" : all[i + 1]]);
    return pairs;
  }, []),
);
const target = args.target ?? "127.0.0.1:50051";
const seconds = Number(args.duration ?? 5);
const connections = Number(args.connections ?? 4);
const streams = Number(args.streams ?? 16);
const plugin = Buffer.from(args.plugin ?? "catalog");
const fixed = args.body ? readFileSync(args.body) : null;

function varint(n) {
  const out = [];
  while (n > 0x7f) { out.push((n & 0x7f) | 0x80); n >>>= 7; }
  out.push(n);
  return Buffer.from(out);
}

// CheckRequest{token = 1, plugin = 3} in a gRPC length-prefixed frame.
function randomTokenFrame() {
  const token = Buffer.from(randomBytes(24).toString("base64"));
  const message = Buffer.concat([
    Buffer.from([0x0a]), varint(token.length), token,
    Buffer.from([0x1a]), varint(plugin.length), plugin,
  ]);
  const header = Buffer.alloc(5);
  header.writeUInt32BE(message.length, 1);
  return Buffer.concat([header, message]);
}

const latencies = [];
let failures = 0;
let measuring = true;
const started = process.hrtime.bigint();

function fire(session) {
  if (!measuring) return;
  const t0 = process.hrtime.bigint();
  const stream = session.request({
    ":method": "POST",
    ":path": "/authz.v1.AuthzService/Check",
    "content-type": "application/grpc",
    te: "trailers",
  });
  let status = null;
  stream.on("trailers", (trailers) => { status = trailers["grpc-status"]; });
  stream.on("response", (headers) => { if (headers["grpc-status"] !== undefined) status = headers["grpc-status"]; });
  stream.on("data", () => {});
  stream.on("close", () => {
    if (status === "0") latencies.push(Number(process.hrtime.bigint() - t0) / 1000);
    else failures += 1;
    fire(session);
  });
  stream.on("error", () => {});
  stream.end(fixed ?? randomTokenFrame());
}

const sessions = [];
for (let c = 0; c < connections; c++) {
  const session = http2.connect(`http://${target}`);
  session.on("error", () => {});
  sessions.push(session);
  for (let s = 0; s < streams; s++) fire(session);
}

setTimeout(() => {
  measuring = false;
  const elapsed = Number(process.hrtime.bigint() - started) / 1e9;
  latencies.sort((a, b) => a - b);
  const pick = (q) => (latencies.length ? latencies[Math.min(latencies.length - 1, Math.floor(q * latencies.length))] : null);
  console.log(JSON.stringify({
    requests: latencies.length,
    failures,
    rps: latencies.length / elapsed,
    p50_us: pick(0.5),
    p99_us: pick(0.99),
  }));
  for (const session of sessions) session.destroy();
  process.exit(0);
}, seconds * 1000);
