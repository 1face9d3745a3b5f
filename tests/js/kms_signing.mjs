// Signs, verifies and MACs through hsmkms with the AWS SDK for JavaScript v3, as a user's
// Node.js program would (issue 14): CreateKey of SIGN_VERIFY and GENERATE_VERIFY_MAC keys,
// Sign, Verify, GetPublicKey, GenerateMac, VerifyMac, and a tampered signature and MAC that
// the server must refuse with the AWS error names.
//
//   node kms_signing.mjs --endpoint http://127.0.0.1:PORT
//
// Credentials and region come from the SDK's default chain, as in kms_client.mjs; the only
// hsmkms-specific setting is the endpoint.
//
// Prints one JSON document on stdout: {ok, sdkVersion, signing: {LABEL: {...}}, mac: {...},
// checks: [...], failures: [...]}. Each signing case carries the message, the signature and
// the public key in base64, so the Python side checks the signature offline with its own
// `cryptography`; node:crypto checks it here too. Exits 0 when every check passed, 1 when any
// failed, 2 on bad usage.

import { createPublicKey, randomBytes, verify } from "node:crypto";
import { readFileSync } from "node:fs";
import { parseArgs } from "node:util";

import {
  CreateKeyCommand,
  GenerateMacCommand,
  GetPublicKeyCommand,
  KMSClient,
  SignCommand,
  VerifyCommand,
  VerifyMacCommand,
} from "@aws-sdk/client-kms";

// label -> the key to make and how to sign with it (node:crypto's name for the padding).
const CASES = {
  "ECC_NIST_P256/ECDSA_SHA_256": { spec: "ECC_NIST_P256", algorithm: "ECDSA_SHA_256" },
  "RSA_2048/RSASSA_PKCS1_V1_5_SHA_256": {
    spec: "RSA_2048",
    algorithm: "RSASSA_PKCS1_V1_5_SHA_256",
  },
};

const { values: args } = parseArgs({ options: { endpoint: { type: "string" } } });
if (!args.endpoint) {
  process.stderr.write("usage: node kms_signing.mjs --endpoint URL\n");
  process.exit(2);
}

const sdkVersion = JSON.parse(
  readFileSync(new URL("./node_modules/@aws-sdk/client-kms/package.json", import.meta.url)),
).version;

// maxAttempts 1: a 5xx or a throttle must show up here, not be hidden by a silent retry.
const kms = new KMSClient({ endpoint: args.endpoint, maxAttempts: 1 });

const result = { ok: false, sdkVersion, signing: {}, mac: null, checks: [], failures: [] };

class CheckFailed extends Error {}

function check(name, condition, detail = "") {
  if (!condition) throw new CheckFailed(`${name}${detail ? `: ${detail}` : ""}`);
  result.checks.push(name);
}

function describeError(err) {
  return {
    name: err?.name ?? "Error",
    message: err?.message ?? String(err),
    httpStatus: err?.$metadata?.httpStatusCode ?? null,
    requestId: err?.$metadata?.requestId ?? null,
  };
}

async function step(label, fn) {
  try {
    await fn();
  } catch (err) {
    if (err instanceof CheckFailed) {
      result.failures.push({ step: label, check: err.message });
    } else {
      result.failures.push({ step: label, error: describeError(err) });
    }
  }
}

const b64 = (bytes) => Buffer.from(bytes).toString("base64");
const sameBytes = (a, b) => Buffer.from(a).equals(Buffer.from(b));

// Sends a command that must fail; returns the error (name, message, HTTP status).
async function refusal(label, command) {
  try {
    await kms.send(command);
  } catch (err) {
    return describeError(err);
  }
  check(`${label} is refused`, false, "the call succeeded");
  return null;
}

async function createKey(spec, usage) {
  const out = await kms.send(new CreateKeyCommand({
    KeySpec: spec,
    KeyUsage: usage,
    Description: `hsmkms JS SDK signing test: ${spec} ${usage}`,
  }));
  const md = out.KeyMetadata;
  check(`${spec}: CreateKey echoes KeySpec and KeyUsage`,
    md.KeySpec === spec && md.KeyUsage === usage, `got ${md.KeySpec} ${md.KeyUsage}`);
  check(`${spec}: the new key is enabled`, md.Enabled === true && md.KeyState === "Enabled");
  return md;
}

for (const [label, { spec, algorithm }] of Object.entries(CASES)) {
  await step(label, async () => {
    const md = await createKey(spec, "SIGN_VERIFY");
    check(`${label}: DescribeKey lists the algorithm`, md.SigningAlgorithms?.includes(algorithm),
      `got ${md.SigningAlgorithms}`);
    const message = Buffer.concat([Buffer.from("signed through the JS SDK: "), randomBytes(16)]);

    const published = await kms.send(new GetPublicKeyCommand({ KeyId: md.KeyId }));
    check(`${label}: GetPublicKey names the key by ARN`, published.KeyId === md.Arn,
      `got ${published.KeyId}`);
    check(`${label}: GetPublicKey shows the spec, the usage and the algorithm`,
      published.KeySpec === spec && published.KeyUsage === "SIGN_VERIFY"
        && published.SigningAlgorithms?.includes(algorithm));
    check(`${label}: the public key arrives as a Uint8Array`, published.PublicKey instanceof Uint8Array);

    const signed = await kms.send(new SignCommand({
      KeyId: md.Arn,
      Message: message,
      MessageType: "RAW",
      SigningAlgorithm: algorithm,
    }));
    check(`${label}: Sign names the key by ARN`, signed.KeyId === md.Arn, `got ${signed.KeyId}`);
    check(`${label}: Sign echoes the algorithm`, signed.SigningAlgorithm === algorithm,
      `got ${signed.SigningAlgorithm}`);
    check(`${label}: the signature arrives as a Uint8Array`, signed.Signature instanceof Uint8Array);

    // node:crypto's default ECDSA encoding is DER (X9.62), the one KMS returns.
    const pub = createPublicKey({ key: Buffer.from(published.PublicKey), format: "der", type: "spki" });
    check(`${label}: node:crypto verifies the signature with the public key`,
      verify("sha256", message, pub, Buffer.from(signed.Signature)));

    const verified = await kms.send(new VerifyCommand({
      KeyId: md.KeyId,
      Message: message,
      MessageType: "RAW",
      Signature: signed.Signature,
      SigningAlgorithm: algorithm,
    }));
    check(`${label}: Verify says the signature is valid`, verified.SignatureValid === true,
      `got ${verified.SignatureValid}`);
    check(`${label}: Verify names the key by ARN`, verified.KeyId === md.Arn, `got ${verified.KeyId}`);

    const tampered = Buffer.from(signed.Signature);
    tampered[tampered.length >> 1] ^= 0x01;
    const tamperedError = await refusal(`${label}: Verify of a tampered signature`,
      new VerifyCommand({
        KeyId: md.KeyId,
        Message: message,
        Signature: tampered,
        SigningAlgorithm: algorithm,
      }));
    const otherMessageError = await refusal(`${label}: Verify of another message`,
      new VerifyCommand({
        KeyId: md.KeyId,
        Message: Buffer.concat([message, Buffer.from("!")]),
        Signature: signed.Signature,
        SigningAlgorithm: algorithm,
      }));

    result.signing[label] = {
      spec,
      algorithm,
      keyArn: md.Arn,
      message: b64(message),
      signature: b64(signed.Signature),
      publicKey: b64(published.PublicKey),
      signatureValid: verified.SignatureValid,
      tamperedError,
      otherMessageError,
    };
  });
}

await step("HMAC_256", async () => {
  const md = await createKey("HMAC_256", "GENERATE_VERIFY_MAC");
  check("HMAC_256: DescribeKey lists HMAC_SHA_256", md.MacAlgorithms?.includes("HMAC_SHA_256"),
    `got ${md.MacAlgorithms}`);
  const message = randomBytes(48);
  const made = await kms.send(new GenerateMacCommand({
    KeyId: md.KeyId,
    Message: message,
    MacAlgorithm: "HMAC_SHA_256",
  }));
  check("HMAC_256: GenerateMac names the key by ARN", made.KeyId === md.Arn, `got ${made.KeyId}`);
  check("HMAC_256: the MAC arrives as a Uint8Array", made.Mac instanceof Uint8Array);
  const again = await kms.send(new GenerateMacCommand({
    KeyId: md.Arn,
    Message: message,
    MacAlgorithm: "HMAC_SHA_256",
  }));
  check("HMAC_256: GenerateMac is deterministic", sameBytes(again.Mac, made.Mac));

  const verified = await kms.send(new VerifyMacCommand({
    KeyId: md.KeyId,
    Message: message,
    Mac: made.Mac,
    MacAlgorithm: "HMAC_SHA_256",
  }));
  check("HMAC_256: VerifyMac says the MAC is valid", verified.MacValid === true,
    `got ${verified.MacValid}`);

  const tampered = Buffer.from(made.Mac);
  tampered[0] ^= 0x01;
  const tamperedError = await refusal("HMAC_256: VerifyMac of a tampered MAC",
    new VerifyMacCommand({
      KeyId: md.KeyId,
      Message: message,
      Mac: tampered,
      MacAlgorithm: "HMAC_SHA_256",
    }));
  result.mac = {
    keyArn: md.Arn,
    algorithm: made.MacAlgorithm,
    macLength: made.Mac.length,
    macValid: verified.MacValid,
    tamperedError,
  };
});

kms.destroy();
result.ok = result.failures.length === 0;
process.stdout.write(`${JSON.stringify(result, null, 2)}\n`);
process.exit(result.ok ? 0 : 1);
