import { createCipheriv, createDecipheriv, createHash, randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { DataConverter, Payload, PayloadCodec } from '@temporalio/common';
import proto from '@temporalio/proto';
import { ConfigError } from '../config/errors.js';
import type { TemporalConfig } from '../config/schema.js';
import { registerSecret } from '../process/secrets.js';

// Temporal's history holds every workflow input, result, activity argument, heartbeat, signal,
// query answer and (with the failure converter below) failure message. With
// `temporal.payloadCodec` configured, clients and workers encrypt them all with AES-256-GCM
// before they reach the server; the key comes from the environment only.

export const ENCRYPTED_ENCODING = 'binary/encrypted';
const CIPHER = 'AES-256-GCM';
const IV = 12;
const TAG = 16;

const PayloadProto = proto.temporal.api.common.v1.Payload;
const text = (value: string): Uint8Array => Buffer.from(value, 'utf8');
const metadataText = (payload: Payload, key: string): string | undefined => {
  const value = payload.metadata?.[key];
  return value ? Buffer.from(value).toString('utf8') : undefined;
};

/** Where the payload codec's key comes from. Mentioned in every error. */
const KEY_FIELD = 'temporal.payloadCodec.keyEnv';
const KEY_HINT = 'generate one with `openssl rand -base64 32` and give the same key to every worker and client of this namespace';

/**
 * 32 random bytes, base64 or hex. Errors say what is wrong with the value, never what it is.
 */
export function parseCodecKey(value: string, envName: string): Buffer {
  const trimmed = value.trim();
  let key: Buffer | undefined;
  if (/^[0-9a-fA-F]{64}$/.test(trimmed)) key = Buffer.from(trimmed, 'hex');
  else if (/^[A-Za-z0-9+/_-]+={0,2}$/.test(trimmed)) key = Buffer.from(trimmed, 'base64');
  if (!key || key.length !== 32) {
    throw new ConfigError(
      [{ path: KEY_FIELD, message: `environment variable ${envName} must hold a 32-byte key, base64 (44 characters) or hex (64 characters); it holds ${key ? `${key.length} bytes` : 'neither'}`, hint: KEY_HINT }],
      'configuration',
    );
  }
  return key;
}

/** A short public name of a key, so a payload tells which key it needs (not the key itself). */
export function codecKeyId(key: Buffer): string {
  return createHash('sha256').update('pgrunbook payload codec key id\0').update(key).digest('hex').slice(0, 16);
}

/**
 * AES-256-GCM over the whole serialized Payload (its own metadata included: even the encoding of
 * the plaintext is hidden). Metadata: encoding binary/encrypted, the key id and the cipher. Data:
 * IV (12 bytes) || ciphertext || tag (16 bytes); the key id is authenticated too.
 */
export class AesGcmPayloadCodec implements PayloadCodec {
  readonly keyId: string;

  constructor(private readonly key: Buffer) {
    this.keyId = codecKeyId(key);
  }

  async encode(payloads: Payload[]): Promise<Payload[]> {
    return payloads.map((payload) => {
      const iv = randomBytes(IV);
      const cipher = createCipheriv('aes-256-gcm', this.key, iv, { authTagLength: TAG });
      cipher.setAAD(text(`${ENCRYPTED_ENCODING};${this.keyId}`));
      const plaintext = PayloadProto.encode(payload).finish();
      return {
        metadata: { encoding: text(ENCRYPTED_ENCODING), 'encryption-key-id': text(this.keyId), 'encryption-cipher': text(CIPHER) },
        data: Buffer.concat([iv, cipher.update(plaintext), cipher.final(), cipher.getAuthTag()]),
      };
    });
  }

  async decode(payloads: Payload[]): Promise<Payload[]> {
    return payloads.map((payload) => {
      // Plain payloads pass: `temporal workflow start --input` sends JSON, and that is the sender's choice.
      if (metadataText(payload, 'encoding') !== ENCRYPTED_ENCODING) return payload;
      const keyId = metadataText(payload, 'encryption-key-id');
      if (keyId !== this.keyId) {
        throw new Error(`cannot decrypt a Temporal payload: it was encrypted with payload codec key ${keyId ?? '(unknown)'}, and the key in ${KEY_FIELD} here is ${this.keyId}\nHINT: use the same key as the workers of this namespace`);
      }
      const data = Buffer.from(payload.data ?? new Uint8Array(0));
      if (data.length < IV + TAG) throw new Error(`cannot decrypt a Temporal payload encrypted with key ${keyId}: it is only ${data.length} bytes long`);
      const decipher = createDecipheriv('aes-256-gcm', this.key, data.subarray(0, IV), { authTagLength: TAG });
      decipher.setAAD(text(`${ENCRYPTED_ENCODING};${keyId}`));
      decipher.setAuthTag(data.subarray(data.length - TAG));
      let plaintext: Buffer;
      try {
        plaintext = Buffer.concat([decipher.update(data.subarray(IV, data.length - TAG)), decipher.final()]);
      } catch {
        throw new Error(`cannot decrypt a Temporal payload encrypted with key ${keyId}: authentication failed (the payload was modified)`);
      }
      return PayloadProto.decode(plaintext) as Payload;
    });
  }
}

/**
 * The codec of a process with no key configured: writes plain payloads, and refuses encrypted
 * ones with an error that says what to configure (instead of the SDK's "Unknown encoding").
 */
export class KeylessPayloadCodec implements PayloadCodec {
  async encode(payloads: Payload[]): Promise<Payload[]> {
    return payloads;
  }

  async decode(payloads: Payload[]): Promise<Payload[]> {
    for (const payload of payloads) {
      if (metadataText(payload, 'encoding') === ENCRYPTED_ENCODING) {
        throw new Error(
          `this workflow's data is encrypted with pgrunbook's payload codec (key ${metadataText(payload, 'encryption-key-id') ?? 'unknown'}); this process has no key\n` +
            `HINT: set ${KEY_FIELD} in the config and export that variable with the key the workers use`,
        );
      }
    }
    return payloads;
  }
}

/** The payload codec for a process, from the config and its environment; null when none is configured. */
export function payloadCodecFor(temporal: TemporalConfig, env: NodeJS.ProcessEnv = process.env): AesGcmPayloadCodec | null {
  const envName = temporal.payloadCodec?.keyEnv;
  if (!envName) return null;
  const value = env[envName];
  if (!value) {
    throw new ConfigError([{ path: KEY_FIELD, message: `environment variable ${envName} is not set`, hint: `export ${envName}=<the payload codec key>; ${KEY_HINT}` }], 'configuration');
  }
  registerSecret(value);
  registerSecret(value.trim());
  return new AesGcmPayloadCodec(parseCodecKey(value, envName));
}

const here = dirname(fileURLToPath(import.meta.url));

/** The failure converter module (from source in tests, from dist otherwise). */
export const failureConverterPath = existsSync(join(here, 'failure-converter.ts')) ? join(here, 'failure-converter.ts') : join(here, 'failure-converter.js');

/**
 * The data converter of a client: the codec when configured, else the keyless one. Failures need
 * no converter here: the SDK's default reads encoded failure attributes.
 */
export function clientDataConverter(temporal: TemporalConfig, env: NodeJS.ProcessEnv = process.env): DataConverter {
  return { payloadCodecs: [payloadCodecFor(temporal, env) ?? new KeylessPayloadCodec()] };
}

/**
 * The data converter of a worker: with the codec, failure messages and stack traces are encoded
 * (and so encrypted) too. The workflow bundle must then be built with the same failure converter
 * (bundleWorkflows({ encodeFailureAttributes: true })): workflow failures are made inside it.
 */
export function workerDataConverter(temporal: TemporalConfig, env: NodeJS.ProcessEnv = process.env): { dataConverter: DataConverter; encodeFailureAttributes: boolean } {
  const codec = payloadCodecFor(temporal, env);
  if (!codec) return { dataConverter: { payloadCodecs: [new KeylessPayloadCodec()] }, encodeFailureAttributes: false };
  return { dataConverter: { payloadCodecs: [codec], failureConverterPath }, encodeFailureAttributes: true };
}
