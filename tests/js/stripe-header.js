#!/usr/bin/env node
// Prints Stripe-Signature headers made by the official Stripe SDK's test helper,
// `stripe.webhooks.generateTestHeaderString` (npm `stripe`, pinned in package.json), so the
// Rust verifier is checked against Stripe's own code, not just our reading of the docs.
//
// stdin:  {"payload": "<raw body string>", "secret": "whsec_…", "timestamp": <unix seconds>,
//          "scheme": "v1"}            (`timestamp` optional: now; `scheme` optional: v1)
//         or an array of such objects.
// stdout: {"header": "t=…,v1=…"}, or an array of them in the same order.
// Exit 1 with a message on stderr when the input is not as above.
//
// Usage: echo '{"payload":"{}","secret":"whsec_x","timestamp":1700000000}' \
//          | node tests/js/stripe-header.js
// Install first: npm ci --prefix tests/js
'use strict';

const Stripe = require('stripe');

// stripe-node copies `webhooks` onto the exported constructor; older majors only had it on
// instances. An instance makes no network call.
const webhooks = Stripe.webhooks || new Stripe('sk_test_unused').webhooks;

function header(args) {
  if (args === null || typeof args !== 'object' || Array.isArray(args)) {
    throw new Error('each input must be an object {payload, secret, timestamp}');
  }
  if (typeof args.payload !== 'string') {
    throw new Error('`payload` must be the raw body as a string');
  }
  if (typeof args.secret !== 'string' || args.secret === '') {
    throw new Error('`secret` must be a non-empty string');
  }
  if (args.timestamp !== undefined && !Number.isInteger(args.timestamp)) {
    throw new Error('`timestamp` must be an integer (unix seconds)');
  }
  const opts = { payload: args.payload, secret: args.secret, timestamp: args.timestamp };
  if (args.scheme !== undefined) opts.scheme = args.scheme;
  return { header: webhooks.generateTestHeaderString(opts) };
}

let input = '';
process.stdin.setEncoding('utf8');
process.stdin.on('data', (chunk) => {
  input += chunk;
});
process.stdin.on('end', () => {
  try {
    const args = JSON.parse(input);
    const out = Array.isArray(args) ? args.map(header) : header(args);
    process.stdout.write(JSON.stringify(out) + '\n');
  } catch (e) {
    process.stderr.write(`stripe-header.js: ${e.message}\n`);
    process.exit(1);
  }
});
