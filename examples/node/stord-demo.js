#!/usr/bin/env node
// A Node.js client of stord: loads protos/stord/v1 at run time and exercises the key-value store, the event
// store (10,000 events streamed through IngestEvents, read back and their hash chain checked) and the job
// queue against a running daemon.
//
//   node stord-demo.js [--address 127.0.0.1:50051] [--namespace default] [--api-key KEY] [--events 10000]
//
// With a daemon that requires API keys, pass --api-key (or STORD_API_KEY) and no --namespace: the key decides
// the namespace.
//
// Exits 0 when every check passed, 1 with a message on stderr otherwise.
"use strict";

const crypto = require("node:crypto");
const path = require("node:path");
const { parseArgs } = require("node:util");

const grpc = require("@grpc/grpc-js");
const protoLoader = require("@grpc/proto-loader");

const PROTOS = path.resolve(__dirname, "..", "..", "protos");
const BATCH_SIZE = 1000;

function loadServices() {
  const definition = protoLoader.loadSync(
    ["stord/v1/kv.proto", "stord/v1/events.proto", "stord/v1/jobs.proto"],
    {
      includeDirs: [PROTOS],
      keepCase: true, // field names as in the protos: session_id, not sessionId
      longs: String, // int64 and uint64 as decimal strings, never rounded
      enums: String, // enum values by name: "SEVERITY_INFO"
      defaults: true, // unset scalars come back as their zero value
      oneofs: true,
    },
  );
  return grpc.loadPackageDefinition(definition).stord.v1;
}

// A Struct is a map of Values; these convert plain JSON values both ways. proto-loader takes the well-known
// types from protobufjs, whose field names are camelCase whatever keepCase says: numberValue, not number_value.
function toValue(value) {
  if (value === null) return { nullValue: "NULL_VALUE" };
  if (Array.isArray(value)) return { listValue: { values: value.map(toValue) } };
  switch (typeof value) {
    case "number":
      return { numberValue: value };
    case "string":
      return { stringValue: value };
    case "boolean":
      return { boolValue: value };
    case "object":
      return { structValue: toStruct(value) };
    default:
      throw new TypeError(`cannot encode ${typeof value} in a Struct`);
  }
}

function toStruct(object) {
  const fields = {};
  for (const [key, value] of Object.entries(object)) fields[key] = toValue(value);
  return { fields };
}

function fromValue(value) {
  switch (value.kind) {
    case "nullValue":
      return null;
    case "listValue":
      return value.listValue.values.map(fromValue);
    case "structValue":
      return fromStruct(value.structValue);
    default:
      return value[value.kind];
  }
}

function fromStruct(struct) {
  const object = {};
  for (const [key, value] of Object.entries(struct ? struct.fields : {})) object[key] = fromValue(value);
  return object;
}

function toTimestamp(milliseconds) {
  return { seconds: String(Math.floor(milliseconds / 1000)), nanos: (milliseconds % 1000) * 1e6 };
}

function fromTimestamp(timestamp) {
  return Number(timestamp.seconds) * 1000 + Math.floor(timestamp.nanos / 1e6);
}

// Canonical JSON as events.proto defines it: keys sorted by code point at every depth, no whitespace, strings
// and numbers as JSON.stringify writes them.
function canonicalJson(value) {
  if (Array.isArray(value)) return `[${value.map(canonicalJson).join(",")}]`;
  if (value !== null && typeof value === "object") {
    const keys = Object.keys(value).sort((a, b) => Buffer.compare(Buffer.from(a), Buffer.from(b)));
    return `{${keys.map((key) => `${JSON.stringify(key)}:${canonicalJson(value[key])}`).join(",")}}`;
  }
  return JSON.stringify(value);
}

// The hash of a stored event, computed on this side from its fields (see the file comment of events.proto).
function eventHash(event) {
  const lower = (name, prefix) => name.slice(prefix.length).toLowerCase();
  return crypto
    .createHash("sha256")
    .update(
      canonicalJson({
        v: 2,
        id: event.id,
        timestamp: new Date(fromTimestamp(event.timestamp)).toISOString(),
        sessionId: event.session_id,
        agentId: event.agent_id,
        eventType: lower(event.event_type, "EVENT_TYPE_"),
        severity: lower(event.severity, "SEVERITY_"),
        payload: fromStruct(event.payload),
        metadata: fromStruct(event.metadata),
        prevHash: event.prev_hash === undefined || event.prev_hash === null ? null : event.prev_hash,
      }),
      "utf8",
    )
    .digest("hex");
}

function statusName(code) {
  return Object.keys(grpc.status).find((name) => grpc.status[name] === code) ?? String(code);
}

// Promisified unary calls that carry the namespace and a deadline.
function unary(client, metadata) {
  return (method, request, seconds = 30) =>
    new Promise((resolve, reject) => {
      const deadline = new Date(Date.now() + seconds * 1000);
      client[method](request, metadata, { deadline }, (error, response) =>
        error ? reject(new Error(`${method}: ${statusName(error.code)}: ${error.details}`)) : resolve(response),
      );
    });
}

function check(condition, message) {
  if (!condition) throw new Error(`check failed: ${message}`);
}

async function keyValue(call) {
  const key = `node-demo-${process.pid}`;
  const value = Buffer.from("hello from Node.js \u2713", "utf8");
  const set = await call("Set", { key, value });
  check(set.written, "Set wrote the key");
  const got = await call("Get", { key });
  check(got.found && Buffer.compare(got.value, value) === 0, `Get returned the value set (${got.value})`);
  const missing = await call("Get", { key: `${key}-missing` });
  check(!missing.found, "Get of a missing key is not found");
  console.log(`kv: set and got ${key}`);
}

// Streams `total` events of one new session in batches of 1000 and waits for every acknowledgement.
function ingest(client, metadata, sessionId, total, startMs) {
  return new Promise((resolve, reject) => {
    const stream = client.IngestEvents(metadata, { deadline: new Date(Date.now() + 120_000) });
    const batches = Math.ceil(total / BATCH_SIZE);
    let acknowledged = 0;
    let accepted = 0;
    stream.on("data", (response) => {
      check(Number(response.sequence) === acknowledged + 1, `batches acknowledged in order (${response.sequence})`);
      acknowledged += 1;
      accepted += response.accepted;
      if (acknowledged === batches) stream.end();
    });
    stream.on("error", (error) => reject(new Error(`IngestEvents: ${statusName(error.code)}: ${error.details}`)));
    stream.on("end", () => resolve({ acknowledged, accepted }));
    for (let batch = 0; batch < batches; batch += 1) {
      const events = [];
      for (let index = batch * BATCH_SIZE; index < Math.min(total, (batch + 1) * BATCH_SIZE); index += 1) {
        events.push({
          id: `${sessionId}-${String(index).padStart(6, "0")}`,
          timestamp: toTimestamp(startMs + index),
          session_id: sessionId,
          agent_id: "node-demo-agent",
          event_type: index === 0 ? "EVENT_TYPE_SESSION_STARTED" : "EVENT_TYPE_TOOL_CALL",
          severity: index % 100 === 99 ? "SEVERITY_WARN" : "SEVERITY_INFO",
          payload: toStruct({ index, tool: "search", args: { q: `query ${index}`, exact: index % 2 === 0 } }),
          metadata: toStruct({ source: "node" }),
        });
      }
      stream.write({ sequence: String(batch + 1), events });
    }
  });
}

async function events(client, metadata, total) {
  const call = unary(client, metadata);
  const sessionId = `node-${process.pid}-${Date.now()}`;
  const startMs = Date.now() - total; // one event per millisecond, all in the past
  const started = process.hrtime.bigint();
  const { acknowledged, accepted } = await ingest(client, metadata, sessionId, total, startMs);
  const seconds = Number(process.hrtime.bigint() - started) / 1e9;
  check(accepted === total, `IngestEvents accepted every event (${accepted} of ${total})`);
  console.log(
    `events: ingested ${accepted} in ${acknowledged} batches, ${seconds.toFixed(2)} s ` +
      `(${Math.round(accepted / seconds)} events/s)`,
  );

  const filter = { session_id: sessionId };
  const counted = await call("CountEvents", { filter });
  check(Number(counted.count) === total, `CountEvents counts ${total} (${counted.count})`);
  const warnings = await call("CountEvents", { filter: { session_id: sessionId, severities: ["SEVERITY_WARN"] } });
  check(Number(warnings.count) === Math.floor(total / 100), `CountEvents by severity (${warnings.count})`);

  // Read the session back in order, 500 at a time, and check every event and the chain that links them.
  let pageToken = "";
  let seen = 0;
  let previousHash = null;
  do {
    const page = await call("QueryEvents", {
      filter,
      order: "SORT_ORDER_ASCENDING",
      page_size: 500,
      page_token: pageToken,
    });
    check(Number(page.total) === total, `QueryEvents total is ${total} (${page.total})`);
    for (const event of page.events) {
      const payload = fromStruct(event.payload);
      check(event.id === `${sessionId}-${String(seen).padStart(6, "0")}`, `event ${seen} in order (${event.id})`);
      check(payload.index === seen && payload.args.q === `query ${seen}`, `payload of event ${seen} round-trips`);
      check(fromTimestamp(event.timestamp) === startMs + seen, `timestamp of event ${seen} round-trips`);
      check(Number(event.chain_index) === seen, `chain_index of event ${seen} (${event.chain_index})`);
      check((event.prev_hash ?? null) === previousHash, `event ${seen} links to the previous hash`);
      check(event.hash === eventHash(event), `hash of event ${seen} matches the one computed in Node.js`);
      previousHash = event.hash;
      seen += 1;
    }
    check(page.has_more === (page.next_page_token !== ""), "has_more agrees with next_page_token");
    pageToken = page.next_page_token;
  } while (pageToken !== "");
  check(seen === total, `QueryEvents returned ${total} events (${seen})`);

  const verified = await call("VerifySessionChain", { session_id: sessionId }, 60);
  check(verified.valid && Number(verified.checked_events) === total, `the server verifies the chain (${verified.reason})`);
  console.log(`events: read back ${seen} events, counted ${counted.count}, hash chain verified on both sides`);
}

async function jobs(call) {
  const queue = `node-demo-${process.pid}`;
  const enqueued = await call("Enqueue", { jobs: [{ queue, payload: toStruct({ task: "resize", width: 640 }) }] });
  const jobId = enqueued.jobs[0].job_id;
  check(jobId !== "" && !enqueued.jobs[0].deduplicated, "Enqueue returned a new job id");
  const dequeued = await call("Dequeue", { queue, max_jobs: 1, lease_duration: { seconds: "30", nanos: 0 } });
  check(dequeued.jobs.length === 1 && dequeued.jobs[0].id === jobId, "Dequeue leased the job");
  const job = dequeued.jobs[0];
  check(job.status === "JOB_STATUS_RUNNING" && job.attempts === 1, `the job is RUNNING (${job.status})`);
  check(fromStruct(job.payload).width === 640, "the payload round-trips");
  await call("Acknowledge", { leases: [{ job_id: jobId, lease_token: job.lease_token }] });
  const after = await call("GetJob", { job_id: jobId });
  check(after.found && after.job.status === "JOB_STATUS_COMPLETED", `the job is COMPLETED (${after.job.status})`);
  const empty = await call("Dequeue", { queue, max_jobs: 1 });
  check(empty.jobs.length === 0, "nothing is left to dequeue");
  console.log(`jobs: enqueued, dequeued and acknowledged ${jobId}`);
}

async function main() {
  const { values } = parseArgs({
    options: {
      address: { type: "string", default: process.env.STORD_ADDRESS || "127.0.0.1:50051" },
      namespace: { type: "string", default: "" },
      "api-key": { type: "string", default: process.env.STORD_API_KEY || "" },
      events: { type: "string", default: "10000" },
    },
  });
  const total = Number(values.events);
  if (!Number.isInteger(total) || total < 1) throw new Error(`--events must be a whole number above 0`);
  const stord = loadServices();
  const credentials = grpc.credentials.createInsecure();
  const metadata = new grpc.Metadata();
  if (values.namespace) metadata.set("stord-namespace", values.namespace);
  if (values["api-key"]) metadata.set("authorization", `Bearer ${values["api-key"]}`);

  const database = new stord.DatabaseService(values.address, credentials);
  const eventStore = new stord.EventStoreService(values.address, credentials);
  const jobQueue = new stord.JobQueueService(values.address, credentials);
  try {
    await keyValue(unary(database, metadata));
    await events(eventStore, metadata, total);
    await jobs(unary(jobQueue, metadata));
  } finally {
    for (const client of [database, eventStore, jobQueue]) client.close();
  }
  console.log("ok");
}

main().catch((error) => {
  console.error(error.message);
  process.exit(1);
});
