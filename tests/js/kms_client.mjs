// Drives hsmkms with the AWS SDK for JavaScript v3, as a user's Node.js program would, and
// checks every key it gets back with node:crypto (Node's own OpenSSL, not the server's).
//
//   node kms_client.mjs --endpoint http://127.0.0.1:PORT [--specs RSA_2048,ECC_NIST_P256,...]
//
// Credentials and region come from the SDK's default chain: AWS_SHARED_CREDENTIALS_FILE and
// AWS_PROFILE (hsmkms's home `credentials` file holds both the keys and `region`), exactly as
// for any AWS account. The only hsmkms-specific setting is the endpoint.
//
// Prints one JSON document on stdout: {ok, sdkVersion, keyArn, checks: [...], failures: [...]},
// each failure with the operation, the AWS error name, its message and the HTTP status.
// Exits 0 when every check passed, 1 when any failed, 2 on bad usage.

import { createPrivateKey, createPublicKey, randomBytes, sign, verify } from "node:crypto";
import { readFileSync } from "node:fs";
import { parseArgs } from "node:util";

import {
  CreateAliasCommand,
  CreateKeyCommand,
  DecryptCommand,
  GenerateDataKeyPairCommand,
  GenerateDataKeyPairWithoutPlaintextCommand,
  GenerateDataKeyWithoutPlaintextCommand,
  KMSClient,
} from "@aws-sdk/client-kms";

const ALL_SPECS = [
  "RSA_2048",
  "RSA_3072",
  "RSA_4096",
  "ECC_NIST_P256",
  "ECC_NIST_P384",
  "ECC_NIST_P521",
  "ECC_SECG_P256K1",
  "ECC_NIST_EDWARDS25519",
];

// What node:crypto must see in each spec's keys.
const EXPECTED = {
  RSA_2048: { type: "rsa", modulusLength: 2048 },
  RSA_3072: { type: "rsa", modulusLength: 3072 },
  RSA_4096: { type: "rsa", modulusLength: 4096 },
  ECC_NIST_P256: { type: "ec", namedCurve: "prime256v1" },
  ECC_NIST_P384: { type: "ec", namedCurve: "secp384r1" },
  ECC_NIST_P521: { type: "ec", namedCurve: "secp521r1" },
  ECC_SECG_P256K1: { type: "ec", namedCurve: "secp256k1" },
  ECC_NIST_EDWARDS25519: { type: "ed25519" },
};

const { values: args } = parseArgs({
  options: {
    endpoint: { type: "string" },
    specs: { type: "string", default: ALL_SPECS.join(",") },
  },
});
if (!args.endpoint) {
  process.stderr.write("usage: node kms_client.mjs --endpoint URL [--specs A,B,...]\n");
  process.exit(2);
}
const specs = args.specs.split(",").filter(Boolean);
for (const spec of specs) {
  if (!(spec in EXPECTED)) {
    process.stderr.write(`unknown key pair spec ${spec}\n`);
    process.exit(2);
  }
}

const sdkVersion = JSON.parse(
  readFileSync(new URL("./node_modules/@aws-sdk/client-kms/package.json", import.meta.url)),
).version;

// maxAttempts 1: a 5xx or a throttle must show up here, not be hidden by a silent retry.
const kms = new KMSClient({ endpoint: args.endpoint, maxAttempts: 1 });

const result = { ok: false, sdkVersion, keyArn: null, checks: [], failures: [] };

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

// Runs one step; a failure is recorded and the remaining steps still run.
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

const sameBytes = (a, b) => Buffer.from(a).equals(Buffer.from(b));
const spki = (key) => key.export({ format: "der", type: "spki" });

// The public key as node:crypto reads it, checked against what the spec promises.
function loadPublic(spec, der) {
  const pub = createPublicKey({ key: Buffer.from(der), format: "der", type: "spki" });
  checkKeyShape(spec, "public", pub);
  return pub;
}

function loadPrivate(spec, der) {
  const priv = createPrivateKey({ key: Buffer.from(der), format: "der", type: "pkcs8" });
  checkKeyShape(spec, "private", priv);
  return priv;
}

function checkKeyShape(spec, which, key) {
  const want = EXPECTED[spec];
  check(`${spec}: ${which} key is ${want.type}`, key.asymmetricKeyType === want.type,
    `node:crypto reads ${key.asymmetricKeyType}`);
  const details = key.asymmetricKeyDetails ?? {};
  if (want.modulusLength) {
    check(`${spec}: ${which} key has a ${want.modulusLength}-bit modulus`,
      details.modulusLength === want.modulusLength, `got ${details.modulusLength}`);
  }
  if (want.namedCurve) {
    check(`${spec}: ${which} key is on ${want.namedCurve}`,
      details.namedCurve === want.namedCurve, `got ${details.namedCurve}`);
  }
}

// The private key's own public half is the public key KMS returned, and they sign/verify.
function checkPair(spec, pub, priv, publicDer) {
  check(`${spec}: the private key's public half equals the returned public key`,
    sameBytes(spki(createPublicKey(priv)), publicDer));
  check(`${spec}: the public key re-exports to the same SPKI DER`, sameBytes(spki(pub), publicDer));
  const message = randomBytes(64);
  const digest = spec === "ECC_NIST_EDWARDS25519" ? null : "sha256";
  const signature = sign(digest, message, priv);
  check(`${spec}: a signature by the private key verifies with the public key`,
    verify(digest, message, pub, signature));
}

async function expectInvalidCiphertext(label, input) {
  try {
    await kms.send(new DecryptCommand(input));
  } catch (err) {
    check(`${label} is refused with InvalidCiphertextException`,
      err?.name === "InvalidCiphertextException",
      `got ${err?.name} (HTTP ${err?.$metadata?.httpStatusCode}): ${err?.message}`);
    check(`${label} answers HTTP 400`, err?.$metadata?.httpStatusCode === 400,
      `got ${err?.$metadata?.httpStatusCode}`);
    return;
  }
  check(`${label} is refused`, false, "Decrypt succeeded");
}

const context = { purpose: "js-sdk-test", run: randomBytes(6).toString("hex") };
const aliasName = `alias/js-sdk-${randomBytes(6).toString("hex")}`;
let keyArn = null;

await step("CreateKey", async () => {
  const out = await kms.send(new CreateKeyCommand({ Description: "hsmkms JS SDK client test" }));
  const md = out.KeyMetadata;
  check("CreateKey returns key metadata", md && typeof md.KeyId === "string");
  check("CreateKey returns a KMS key ARN", /^arn:aws[a-z-]*:kms:[a-z0-9-]+:\d{12}:key\//.test(md.Arn),
    `got ${md.Arn}`);
  check("CreateKey's CreationDate is a Date", md.CreationDate instanceof Date,
    `got ${typeof md.CreationDate}`);
  check("the new key is enabled", md.Enabled === true && md.KeyState === "Enabled");
  keyArn = md.Arn;
  result.keyArn = keyArn;
  await kms.send(new CreateAliasCommand({ AliasName: aliasName, TargetKeyId: md.KeyId }));
  result.checks.push("CreateAlias succeeds");
});

if (keyArn) {
  for (const spec of specs) {
    await step(`GenerateDataKeyPair ${spec}`, async () => {
      const out = await kms.send(new GenerateDataKeyPairCommand({
        KeyId: aliasName,
        KeyPairSpec: spec,
        EncryptionContext: context,
      }));
      check(`${spec}: GenerateDataKeyPair names the key by ARN`, out.KeyId === keyArn,
        `got ${out.KeyId}`);
      check(`${spec}: GenerateDataKeyPair echoes the spec`, out.KeyPairSpec === spec,
        `got ${out.KeyPairSpec}`);
      check(`${spec}: blobs arrive as Uint8Array`,
        out.PublicKey instanceof Uint8Array && out.PrivateKeyPlaintext instanceof Uint8Array
          && out.PrivateKeyCiphertextBlob instanceof Uint8Array);
      const pub = loadPublic(spec, out.PublicKey);
      const priv = loadPrivate(spec, out.PrivateKeyPlaintext);
      checkPair(spec, pub, priv, out.PublicKey);

      const opened = await kms.send(new DecryptCommand({
        CiphertextBlob: out.PrivateKeyCiphertextBlob,
        EncryptionContext: context,
      }));
      check(`${spec}: Decrypt of the private key blob gives back the same PKCS#8`,
        sameBytes(opened.Plaintext, out.PrivateKeyPlaintext));
      check(`${spec}: Decrypt names the key by ARN`, opened.KeyId === keyArn, `got ${opened.KeyId}`);
      check(`${spec}: Decrypt reports SYMMETRIC_DEFAULT`,
        opened.EncryptionAlgorithm === "SYMMETRIC_DEFAULT", `got ${opened.EncryptionAlgorithm}`);
      await expectInvalidCiphertext(`${spec}: Decrypt with another encryption context`, {
        CiphertextBlob: out.PrivateKeyCiphertextBlob,
        EncryptionContext: { ...context, purpose: "something-else" },
      });
    });

    await step(`GenerateDataKeyPairWithoutPlaintext ${spec}`, async () => {
      const out = await kms.send(new GenerateDataKeyPairWithoutPlaintextCommand({
        KeyId: keyArn,
        KeyPairSpec: spec,
        EncryptionContext: context,
      }));
      check(`${spec}: WithoutPlaintext returns no private key plaintext`,
        !("PrivateKeyPlaintext" in out) || out.PrivateKeyPlaintext === undefined);
      check(`${spec}: WithoutPlaintext names the key by ARN`, out.KeyId === keyArn, `got ${out.KeyId}`);
      check(`${spec}: WithoutPlaintext echoes the spec`, out.KeyPairSpec === spec,
        `got ${out.KeyPairSpec}`);
      const pub = loadPublic(spec, out.PublicKey);
      const opened = await kms.send(new DecryptCommand({
        CiphertextBlob: out.PrivateKeyCiphertextBlob,
        EncryptionContext: context,
      }));
      const priv = loadPrivate(spec, opened.Plaintext);
      checkPair(spec, pub, priv, out.PublicKey);
    });
  }

  await step("GenerateDataKeyWithoutPlaintext", async () => {
    for (const [input, size] of [[{ KeySpec: "AES_256" }, 32], [{ KeySpec: "AES_128" }, 16],
      [{ NumberOfBytes: 64 }, 64]]) {
      const label = JSON.stringify(input);
      const out = await kms.send(new GenerateDataKeyWithoutPlaintextCommand({
        KeyId: aliasName,
        EncryptionContext: context,
        ...input,
      }));
      check(`GenerateDataKeyWithoutPlaintext ${label} returns no plaintext`,
        out.Plaintext === undefined);
      check(`GenerateDataKeyWithoutPlaintext ${label} names the key by ARN`, out.KeyId === keyArn,
        `got ${out.KeyId}`);
      const opened = await kms.send(new DecryptCommand({
        CiphertextBlob: out.CiphertextBlob,
        EncryptionContext: context,
      }));
      check(`GenerateDataKeyWithoutPlaintext ${label}: Decrypt gives ${size} bytes`,
        opened.Plaintext.length === size, `got ${opened.Plaintext.length}`);
      check(`GenerateDataKeyWithoutPlaintext ${label}: Decrypt names the key by ARN`,
        opened.KeyId === keyArn, `got ${opened.KeyId}`);
      // The same blob through Decrypt naming the key explicitly (by alias) opens too.
      const again = await kms.send(new DecryptCommand({
        CiphertextBlob: out.CiphertextBlob,
        EncryptionContext: context,
        KeyId: aliasName,
      }));
      check(`GenerateDataKeyWithoutPlaintext ${label}: Decrypt with KeyId gives the same key`,
        sameBytes(again.Plaintext, opened.Plaintext));
      await expectInvalidCiphertext(`GenerateDataKeyWithoutPlaintext ${label}: Decrypt without the context`, {
        CiphertextBlob: out.CiphertextBlob,
      });
      const flipped = Buffer.from(out.CiphertextBlob);
      flipped[flipped.length - 1] ^= 0x01;
      await expectInvalidCiphertext(`GenerateDataKeyWithoutPlaintext ${label}: Decrypt of a flipped blob`, {
        CiphertextBlob: flipped,
        EncryptionContext: context,
      });
    }
  });
}

kms.destroy();
result.ok = keyArn !== null && result.failures.length === 0;
process.stdout.write(`${JSON.stringify(result, null, 2)}\n`);
process.exit(result.ok ? 0 : 1);
