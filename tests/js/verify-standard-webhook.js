#!/usr/bin/env node
// Verifies a webhook with the official Standard Webhooks library (npm `standardwebhooks`,
// pinned in package.json): `new Webhook(secret).verify(body, headers)`, which checks
// `webhook-id`, `webhook-timestamp` (5 minutes either way of now) and
// `webhook-signature: v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">` (space-separated
// list; any v1 may match), with the key = base64-decoded secret after its `whsec_` prefix.
// Spec: https://github.com/standard-webhooks/standard-webhooks/blob/main/spec/standard-webhooks.md
//
// stdin:  {"secret": "whsec_…", "headers": {"webhook-id": "…", …}, "body": "<raw body>"}
// stdout: {"ok": true, "payload": <parsed body>} or {"ok": false, "error": "<message>"}
// Exit 0 for both verdicts; exit 1 (message on stderr) when the input is not as above.
//
// With `--lines`, reads one such JSON object per line and answers one line each, flushing as
// it goes, so a test receiver can keep a single node process.
//
// Install first: npm ci --prefix tests/js
'use strict';

const readline = require('readline');
const { Webhook } = require('standardwebhooks');

function verdict(request) {
  if (request === null || typeof request !== 'object' || Array.isArray(request)) {
    throw new Error('input must be an object {secret, headers, body}');
  }
  const { secret, headers, body } = request;
  if (typeof secret !== 'string') throw new Error('`secret` must be a string');
  if (headers === null || typeof headers !== 'object') {
    throw new Error('`headers` must be an object of header name → value');
  }
  if (typeof body !== 'string') throw new Error('`body` must be the raw body as a string');
  try {
    const payload = new Webhook(secret).verify(body, headers);
    return { ok: true, payload: payload === undefined ? null : payload };
  } catch (e) {
    return { ok: false, error: String(e && e.message ? e.message : e) };
  }
}

function fail(e) {
  process.stderr.write(`verify-standard-webhook.js: ${e.message}\n`);
  process.exit(1);
}

if (process.argv.includes('--lines')) {
  const rl = readline.createInterface({ input: process.stdin, crlfDelay: Infinity });
  rl.on('line', (line) => {
    if (line.trim() === '') return;
    try {
      process.stdout.write(JSON.stringify(verdict(JSON.parse(line))) + '\n');
    } catch (e) {
      fail(e);
    }
  });
} else {
  let input = '';
  process.stdin.setEncoding('utf8');
  process.stdin.on('data', (chunk) => {
    input += chunk;
  });
  process.stdin.on('end', () => {
    try {
      process.stdout.write(JSON.stringify(verdict(JSON.parse(input))) + '\n');
    } catch (e) {
      fail(e);
    }
  });
}
