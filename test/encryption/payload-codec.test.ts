import { randomBytes } from 'node:crypto';
import { defaultPayloadConverter } from '@temporalio/common';
import { describe, expect, it } from 'vitest';
import { Config, TemporalConfig } from '../../config/schema.js';
import { checkWorkerEnvironment } from '../../worker/run.js';
import { AesGcmPayloadCodec, ENCRYPTED_ENCODING, KeylessPayloadCodec, parseCodecKey, payloadCodecFor } from '../../encryption/payload-codec.js';

// The AES-256-GCM payload codec on its own; test/encryption/codec.e2e.test.ts runs it in a real
// worker and client against a real Temporal server.

const input = { database: 'ledger', label: 'quarter-close', repository: 'vault' };
const payload = defaultPayloadConverter.toPayload(input);
const metadata = (p: { metadata?: Record<string, Uint8Array> | null }, key: string): string => Buffer.from(p.metadata?.[key] ?? []).toString('utf8');

describe('AES-256-GCM payload codec', () => {
  const key = randomBytes(32);
  const codec = new AesGcmPayloadCodec(key);

  it('encrypts the whole payload (its JSON and its encoding) and decrypts it back', async () => {
    const [encoded] = await codec.encode([payload]);
    expect(metadata(encoded!, 'encoding')).toBe(ENCRYPTED_ENCODING);
    expect(metadata(encoded!, 'encryption-key-id')).toBe(codec.keyId);
    expect(metadata(encoded!, 'encryption-cipher')).toBe('AES-256-GCM');
    expect(Buffer.from(encoded!.data!).toString('latin1')).not.toMatch(/ledger|quarter-close|json\/plain/);
    const [decoded] = await codec.decode([encoded!]);
    expect(defaultPayloadConverter.fromPayload(decoded!)).toEqual(input);
    // A fresh IV per payload: the same value never encrypts to the same bytes.
    const [again] = await codec.encode([payload]);
    expect(Buffer.from(again!.data!).equals(Buffer.from(encoded!.data!))).toBe(false);
  });

  it('passes plain payloads through on decode (temporal workflow start --input sends JSON)', async () => {
    expect(await codec.decode([payload])).toEqual([payload]);
  });

  it('refuses another key by its id, a modified payload, and (keyless) any encrypted payload with a hint', async () => {
    const [encoded] = await codec.encode([payload]);
    const other = new AesGcmPayloadCodec(randomBytes(32));
    await expect(other.decode([encoded!])).rejects.toThrow(new RegExp(`encrypted with payload codec key ${codec.keyId}, and the key in temporal.payloadCodec.keyEnv here is ${other.keyId}`));
    const data = Buffer.from(encoded!.data!);
    data[20]! ^= 1;
    await expect(codec.decode([{ ...encoded!, data }])).rejects.toThrow(/authentication failed \(the payload was modified\)/);
    await expect(new KeylessPayloadCodec().decode([encoded!])).rejects.toThrow(/encrypted with pgrunbook's payload codec .*this process has no key\nHINT: set temporal.payloadCodec.keyEnv/);
  });

  it('reads the key from the environment as base64 or hex, and says what is wrong without showing it', () => {
    const temporal = TemporalConfig.parse({ payloadCodec: { keyEnv: 'CODEC_KEY' } });
    const b64 = payloadCodecFor(temporal, { CODEC_KEY: key.toString('base64') });
    const hex = payloadCodecFor(temporal, { CODEC_KEY: key.toString('hex') });
    expect(b64?.keyId).toBe(codec.keyId);
    expect(hex?.keyId).toBe(codec.keyId);
    expect(payloadCodecFor(TemporalConfig.parse({}), {})).toBeNull();
    expect(() => payloadCodecFor(temporal, {})).toThrow(/temporal.payloadCodec.keyEnv: environment variable CODEC_KEY is not set/);
    const short = randomBytes(16).toString('base64');
    try {
      parseCodecKey(short, 'CODEC_KEY');
      expect.unreachable();
    } catch (error) {
      expect((error as Error).message).toMatch(/CODEC_KEY must hold a 32-byte key, base64 \(44 characters\) or hex \(64 characters\); it holds 16 bytes/);
      expect((error as Error).message).toMatch(/HINT: generate one with `openssl rand -base64 32`/);
      expect((error as Error).message).not.toContain(short);
    }
    expect(() => parseCodecKey('not a key!', 'CODEC_KEY')).toThrow(/it holds neither/);
  });

  it('a worker refuses to start without the key (checkWorkerEnvironment)', () => {
    const config = Config.parse({ temporal: { payloadCodec: { keyEnv: 'CODEC_KEY' } }, repositories: { local: { type: 'local', path: '/tmp' } }, databases: {} });
    expect(() => checkWorkerEnvironment(config, {})).toThrow(/invalid worker environment:\n {2}temporal\.payloadCodec\.keyEnv: environment variable CODEC_KEY is not set/);
    expect(() => checkWorkerEnvironment(config, { CODEC_KEY: key.toString('base64') })).not.toThrow();
  });
});
