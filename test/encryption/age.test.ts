import { execFileSync, spawnSync } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { Decrypter, Encrypter } from 'age-encryption';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Config, EncryptionConfig } from '../../config/schema.js';
import { fromZodError } from '../../config/errors.js';
import { decryptStream, DecryptionError, encryptStream, parseIdentities, parseRecipients } from '../../encryption/age.js';
import { checkEncryptionKeys, resolveRepositoryKeys } from '../../encryption/keys.js';
import { ageKeygen, ageTool, type AgeKey } from './age-cli.js';

// Unit level, with the real age-encryption package and the stock age CLI as the references our
// streaming encrypter and decrypter (Node's OpenSSL ChaCha20-Poly1305) must agree with.

const CHUNK = 64 * 1024;
// Around age's 64 KiB STREAM chunks: empty, one byte, exactly one chunk (the last chunk may be
// full), one byte more, several chunks, and a size that ends mid-chunk.
const SIZES = [0, 1, CHUNK - 1, CHUNK, CHUNK + 1, 3 * CHUNK, 1024 * 1024 + 17];

let dir: string;
let alice: AgeKey;
let bob: AgeKey;

beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'pgrunbook-age-'));
  alice = ageKeygen(dir, 'alice');
  bob = ageKeygen(dir, 'bob');
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

async function collect(stream: AsyncIterable<unknown>): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const chunk of stream) chunks.push(Buffer.from(chunk as Uint8Array));
  return Buffer.concat(chunks);
}

/** A source handing out `data` in uneven pieces, as pg_dump's pipe does. */
function source(data: Buffer, piece = 10_000): Readable {
  const pieces: Buffer[] = [];
  for (let i = 0; i < data.length; i += piece) pieces.push(data.subarray(i, i + piece));
  return Readable.from(pieces);
}

const encrypt = async (data: Buffer, recipients: string[] = [alice.recipient]): Promise<Buffer> => collect(await encryptStream(source(data), recipients));
const decrypt = async (ciphertext: Buffer, identities: string[] = [alice.identity]): Promise<Buffer> => collect(await decryptStream(source(ciphertext, 7_777), identities));
const sha = (data: Buffer): string => createHash('sha256').update(data).digest('hex');

function stockDecrypt(ciphertext: Buffer, key: AgeKey): { status: number | null; stdout: Buffer; stderr: string } {
  const file = join(dir, `c-${randomBytes(4).toString('hex')}.age`);
  writeFileSync(file, ciphertext);
  const result = spawnSync(ageTool('age'), ['-d', '-i', key.file, file], { maxBuffer: 64 << 20 });
  return { status: result.status, stdout: result.stdout, stderr: result.stderr.toString('utf8') };
}

describe('age encryption of a stream', () => {
  it.each(SIZES)('round-trips %i bytes, and the stock age CLI and age-encryption decrypt the same bytes', async (size) => {
    const plaintext = randomBytes(size);
    const ciphertext = await encrypt(plaintext);
    expect(ciphertext.subarray(0, 22).toString()).toBe('age-encryption.org/v1\n');
    expect(sha(await decrypt(ciphertext))).toBe(sha(plaintext));

    const stock = stockDecrypt(ciphertext, alice);
    expect(stock.stderr).toBe('');
    expect(sha(stock.stdout)).toBe(sha(plaintext));

    const reference = new Decrypter();
    reference.addIdentity(alice.identity);
    expect(sha(Buffer.from(await reference.decrypt(ciphertext)))).toBe(sha(plaintext));
  });

  it.each([0, CHUNK, 200_000])('decrypts what the stock age CLI and age-encryption encrypted (%i bytes)', async (size) => {
    const plaintext = randomBytes(size);
    const input = join(dir, `p-${size}`);
    writeFileSync(input, plaintext);
    const stock = execFileSync(ageTool('age'), ['-r', alice.recipient, input], { maxBuffer: 64 << 20 });
    expect(sha(await decrypt(stock))).toBe(sha(plaintext));

    const reference = new Encrypter();
    reference.addRecipient(alice.recipient);
    expect(sha(await decrypt(Buffer.from(await reference.encrypt(plaintext))))).toBe(sha(plaintext));
  });

  it('encrypts to several recipients, each of which decrypts alone', async () => {
    const plaintext = randomBytes(100_000);
    const ciphertext = await encrypt(plaintext, [alice.recipient, bob.recipient]);
    expect(sha(await decrypt(ciphertext, [bob.identity]))).toBe(sha(plaintext));
    expect(sha(stockDecrypt(ciphertext, alice).stdout)).toBe(sha(plaintext));
  });

  it('streams: plaintext comes out before the ciphertext has all gone in, and the other way round', async () => {
    let produced = 0;
    const total = 64;
    let firstOutputAfter = -1;
    async function* slowSource(): AsyncGenerator<Buffer> {
      for (let i = 0; i < total; i++) {
        produced = i + 1;
        yield randomBytes(256 * 1024);
        await new Promise((r) => setImmediate(r));
      }
    }
    const encrypted = await encryptStream(Readable.from(slowSource()), [alice.recipient]);
    const decrypted = await decryptStream(encrypted, [alice.identity]);
    let bytes = 0;
    for await (const chunk of decrypted) {
      if (firstOutputAfter < 0) firstOutputAfter = produced;
      bytes += (chunk as Buffer).length;
    }
    expect(bytes).toBe(total * 256 * 1024);
    // 16 MiB went through; the first plaintext left while the source was still near its start.
    expect(firstOutputAfter).toBeLessThan(total / 2);
  });

  it('refuses a wrong key at the header, before any payload is read', async () => {
    const ciphertext = await encrypt(randomBytes(3 * CHUNK));
    const error = await decrypt(ciphertext, [bob.identity]).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(DecryptionError);
    expect((error as DecryptionError).problem).toBe('no-matching-identity');
    expect((error as Error).message).toMatch(/none of the configured identities can decrypt this file/);
    expect((error as Error).message).not.toContain('AGE-SECRET-KEY');
    expect(stockDecrypt(ciphertext, bob).status).not.toBe(0);
  });

  it('detects a modified payload byte: the stream errors at that chunk, and the stock CLI refuses it too', async () => {
    const ciphertext = await encrypt(randomBytes(5 * CHUNK));
    const tampered = Buffer.from(ciphertext);
    // A byte in the third chunk: the header is a few hundred bytes, then the nonce, then chunks of 64 KiB + 16.
    tampered[tampered.length - 2 * (CHUNK + 16) - 100]! ^= 0x01;
    const error = await decrypt(tampered).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(DecryptionError);
    expect((error as DecryptionError).problem).toBe('corrupt');
    expect((error as Error).message).toMatch(/chunk \d of the age payload failed authentication/);
    expect(stockDecrypt(tampered, alice).status).not.toBe(0);
  });

  it('detects a file cut at a chunk boundary (the last-chunk flag) and a modified header', async () => {
    const ciphertext = await encrypt(randomBytes(4 * CHUNK + 10));
    const cut = ciphertext.subarray(0, ciphertext.length - (10 + 16));
    await expect(decrypt(cut)).rejects.toThrow(/failed authentication|truncated/);

    const header = Buffer.from(ciphertext);
    const mac = header.indexOf('\n--- ') + 6;
    header[mac] = header[mac] === 0x41 ? 0x42 : 0x41;
    await expect(decrypt(header)).rejects.toThrow(/age header is invalid/);

    await expect(decrypt(Buffer.from('PGDMP not an age file at all\n'.repeat(10)))).rejects.toThrow(/not an age file/);
  });
});

describe('age keys', () => {
  it('reads age-keygen identity files and derives their recipients', async () => {
    const { identities, recipients } = await parseIdentities(readFileSync(alice.file, 'utf8'), alice.file);
    expect(identities).toEqual([alice.identity]);
    expect(recipients).toEqual([alice.recipient]);
  });

  it('refuses a broken identity or a secret key among recipients without quoting the key', async () => {
    const broken = alice.identity.slice(0, -3) + 'QQQ';
    const error = (await parseIdentities(`# comment\n${broken}\n`, 'key.txt').catch((e: unknown) => e)) as Error;
    expect(error.message).toMatch(/key.txt: identity 1 is not a valid age X25519 identity/);
    expect(error.message).not.toContain(broken);
    expect(() => parseRecipients(`${alice.identity}\n`, 'recipients.txt')).toThrow(/holds a secret key \(an identity\), not a recipient/);
    try {
      parseRecipients(`${alice.identity}\n`, 'recipients.txt');
    } catch (e) {
      expect((e as Error).message).not.toContain(alice.identity);
    }
  });

  it('config: recipients are age1 keys; a secret key pasted there is refused with a hint and never echoed', () => {
    expect(EncryptionConfig.safeParse({ recipients: [alice.recipient], identityFile: alice.file }).success).toBe(true);
    const secret = EncryptionConfig.safeParse({ recipients: [alice.identity] });
    expect(secret.success).toBe(false);
    const message = fromZodError(secret.error!, 'pgrunbook.yaml').message;
    expect(message).toMatch(/recipients\[0\]: this is a secret key \(an age identity\), which never belongs in the config/);
    expect(message).not.toContain(alice.identity);
    const typo = fromZodError(EncryptionConfig.safeParse({ recipients: ['age1short'] }).error!, 'pgrunbook.yaml').message;
    expect(typo).toMatch(/expected an age X25519 recipient/);
    expect(fromZodError(EncryptionConfig.safeParse({ identityFile: 'k.txt' }).error!, 'pgrunbook.yaml').message).toMatch(/expected recipients \(age1\.\.\. public keys\) or recipientsFile/);
  });

  it('a repository resolves recipients from the config and a file, identities from a file or the environment', async () => {
    const recipientsFile = join(dir, 'recipients.txt');
    writeFileSync(recipientsFile, `# offsite\n${bob.recipient}\n`);
    const spec = { type: 'local' as const, path: dir, encryption: { recipients: [alice.recipient], recipientsFile, identityEnv: 'TEST_AGE_KEY' } };
    const keys = await resolveRepositoryKeys('offsite', spec, { TEST_AGE_KEY: alice.identity });
    expect(keys.encryptTo).toEqual([alice.recipient, bob.recipient]);
    expect(keys.identities).toEqual([alice.identity]);
    expect(keys.identityRecipients).toEqual([alice.recipient]);
    const missing = (await resolveRepositoryKeys('offsite', spec, {}).catch((e: unknown) => e)) as Error;
    expect(missing.message).toMatch(/repositories\.offsite\.encryption\.identityEnv: environment variable TEST_AGE_KEY is not set/);
    const unreadable = (await resolveRepositoryKeys('offsite', { ...spec, encryption: { recipients: [alice.recipient], identityFile: join(dir, 'nope.txt') } }).catch((e: unknown) => e)) as Error;
    expect(unreadable.message).toMatch(/repositories\.offsite\.encryption\.identityFile: cannot read .*nope\.txt: ENOENT/);
    const typo = (await resolveRepositoryKeys('offsite', { ...spec, encryption: { recipients: [`${alice.recipient.slice(0, -1)}${alice.recipient.endsWith('q') ? 'p' : 'q'}`] } }).catch((e: unknown) => e)) as Error;
    expect(typo.message).toMatch(/repositories\.offsite\.encryption\.recipients\[0\]: recipient 1: age1\w+ is not a valid age recipient \(its checksum does not match: a typo\?\)/);
    // A backup-only worker: recipients, no identity.
    const writer = await resolveRepositoryKeys('offsite', { ...spec, encryption: { recipients: [alice.recipient] } });
    expect(writer).toMatchObject({ encryptTo: [alice.recipient], identities: null, identityField: 'repositories.offsite.encryption.identityFile' });
  });

  it('a worker refuses to start when a repository\'s key file cannot be read (checked before polling)', async () => {
    const config = Config.parse({
      repositories: { offsite: { type: 'local', path: dir, encryption: { recipients: [alice.recipient], identityFile: join(dir, 'missing-key.txt') } } },
      databases: {},
    });
    await expect(checkEncryptionKeys(config, {})).rejects.toThrow(/invalid worker environment:\n {2}repositories\.offsite\.encryption\.identityFile: cannot read .*missing-key\.txt: ENOENT/);
    await expect(checkEncryptionKeys(Config.parse({ ...config, repositories: { offsite: { type: 'local', path: dir, encryption: { recipients: [alice.recipient], identityFile: alice.file } } } }), {})).resolves.toBeUndefined();
  });
});
