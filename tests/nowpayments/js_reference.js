// Reference for the IPN signature tests: what JavaScript itself makes of a body.
//
// Reads one JSON request per line on stdin and answers each with one JSON line
// on stdout, so a test session can keep one node process and batch its cases.
// Requests:
//   {"op": "bodies", "secret": s, "bodies": [text, ...]}
//   {"op": "doubles", "bits": ["16 hex digits", ...]}   -> String(double)
//   {"op": "numbers", "texts": ["decimal text", ...]}   -> String(Number(text))
"use strict";

const crypto = require("crypto");
const readline = require("readline");

// Recursive key sort that keeps arrays; Object.fromEntries defines properties
// directly, so every key (even "__proto__") stays an ordinary property.
function sortKeys(value) {
  if (Array.isArray(value)) return value.map(sortKeys);
  if (value !== null && typeof value === "object") {
    return Object.fromEntries(
      Object.keys(value)
        .sort()
        .map((k) => [k, sortKeys(value[k])]),
    );
  }
  return value;
}

// The helper from the NOWPayments documentation, verbatim.
function sortObject(obj) {
  return Object.keys(obj)
    .sort()
    .reduce((result, key) => {
      result[key] =
        obj[key] && typeof obj[key] === "object" ? sortObject(obj[key]) : obj[key];
      return result;
    }, {});
}

function hmac(secret, message) {
  return crypto.createHmac("sha512", secret.trim()).update(message).digest("hex");
}

function body(secret, text) {
  let parsed;
  try {
    parsed = JSON.parse(text);
  } catch (err) {
    return { error: String(err.message) };
  }
  const canonical = JSON.stringify(sortKeys(parsed));
  const helper = JSON.stringify(
    parsed !== null && typeof parsed === "object" ? sortObject(parsed) : parsed,
  );
  const result = {
    canonical,
    helper,
    canonical_sig: hmac(secret, canonical),
    helper_sig: hmac(secret, helper),
  };
  if (parsed !== null && typeof parsed === "object" && !Array.isArray(parsed)) {
    // Older documented form: the key list doubles as a replacer allowlist, so
    // nested objects lose every key that is not also a top-level key.
    result.replacer = JSON.stringify(parsed, Object.keys(parsed).sort());
    // Top-level sort only, nested objects left as they came.
    result.top_level = JSON.stringify(
      Object.fromEntries(
        Object.keys(parsed)
          .sort()
          .map((k) => [k, parsed[k]]),
      ),
    );
  }
  return result;
}

function handle(request) {
  switch (request.op) {
    case "bodies":
      return request.bodies.map((text) => body(request.secret, text));
    case "doubles":
      return request.bits.map((hex) => String(Buffer.from(hex, "hex").readDoubleBE(0)));
    case "numbers":
      return request.texts.map((text) => String(Number(text)));
    default:
      throw new Error(`unknown op ${request.op}`);
  }
}

const lines = readline.createInterface({ input: process.stdin, crlfDelay: Infinity });
lines.on("line", (line) => {
  let response;
  try {
    response = { results: handle(JSON.parse(line)) };
  } catch (err) {
    response = { failure: String(err && err.stack ? err.stack : err) };
  }
  process.stdout.write(JSON.stringify(response) + "\n");
});
