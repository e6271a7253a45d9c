import { createCipheriv, createDecipheriv, hkdfSync, randomBytes } from 'node:crypto';
import { Transform, type Readable, type TransformCallback } from 'node:stream';
import { Decrypter, Encrypter, identityToRecipient, type Stanza } from 'age-encryption';

// Backups in the age format (https://age-encryption.org/v1), so that the stock `age` CLI
// decrypts them: `age -d -i key.txt db_full.dump.age | pg_restore ...`.
//
// The header (X25519 key wrapping, header MAC) is made and checked by the age-encryption
// package. The payload, age's STREAM (ChaCha20-Poly1305 in 64 KiB chunks, each authenticated,
// the last one flagged so truncation is detected), is en- and decrypted here with Node's
// OpenSSL: age-encryption's pure-JS cipher runs at ~40 MB/s on one core, OpenSSL at over 1 GB/s,
// and a dump must not wait for its encryption. Both halves are checked against the stock `age`
// CLI and against age-encryption's own decrypter (test/encryption/age.test.ts).

/** Artifacts in the age format carry this suffix (db_full.dump.age), as `age -o` users expect. */
export const AGE_SUFFIX = '.age';

const CHUNK = 64 * 1024;
const TAG = 16;
const NONCE = 16;
/** The header is a few hundred bytes per recipient; anything longer is not an age file. */
const MAX_HEADER = 64 * 1024;
const MAC_LINE = Buffer.from('\n--- ');

/** An X25519 recipient as age-keygen prints it; the format the config accepts. */
export const AGE_RECIPIENT = /^age1[qpzry9x8gf2tvdw0s3jn54khce6mua7l]{58}$/;

/** Why an archive could not be decrypted: the key (no identity matches), or the bytes (modified, truncated, not age). */
export type DecryptionProblem = 'no-matching-identity' | 'corrupt';

export class DecryptionError extends Error {
  override readonly name = 'DecryptionError';
  constructor(
    readonly problem: DecryptionProblem,
    message: string,
  ) {
    super(message);
  }
}

/** The age recipients (public keys) in a recipients file or list: one per line, `#` comments. */
export function parseRecipients(text: string, where: string): string[] {
  const recipients = meaningfulLines(text);
  for (const line of recipients) {
    if (line.startsWith('AGE-SECRET-KEY-')) throw new Error(`${where} holds a secret key (an identity), not a recipient; recipients are the "age1..." public keys (age-keygen -y key.txt)`);
    checkRecipient(line, where);
  }
  if (recipients.length === 0) throw new Error(`${where} lists no recipients`);
  return recipients;
}

/** Throws unless `recipient` is a well-formed X25519 recipient, its bech32 checksum included. */
export function checkRecipient(recipient: string, where: string): void {
  if (!AGE_RECIPIENT.test(recipient)) throw new Error(`${where}: "${recipient.slice(0, 12)}..." is not an age X25519 recipient (age1 followed by 58 characters)`);
  try {
    new Encrypter().addRecipient(recipient);
  } catch {
    throw new Error(`${where}: ${recipient} is not a valid age recipient (its checksum does not match: a typo?)`);
  }
}

/**
 * The X25519 identities (secret keys) in an age identity file (age-keygen's output: comments and
 * `AGE-SECRET-KEY-1...` lines). Error messages never quote a key.
 */
export async function parseIdentities(text: string, where: string): Promise<{ identities: string[]; recipients: string[] }> {
  const identities = meaningfulLines(text);
  if (identities.length === 0) throw new Error(`${where} holds no age identity (expected an AGE-SECRET-KEY-1... line, as written by age-keygen)`);
  const recipients: string[] = [];
  for (const [i, identity] of identities.entries()) {
    if (!identity.startsWith('AGE-SECRET-KEY-1')) throw new Error(`${where}: line ${i + 1} of its keys is not an age X25519 identity (AGE-SECRET-KEY-1...)`);
    try {
      recipients.push(await identityToRecipient(identity));
    } catch {
      throw new Error(`${where}: identity ${i + 1} is not a valid age X25519 identity (bad length or checksum)`);
    }
  }
  return { identities, recipients };
}

function meaningfulLines(text: string): string[] {
  return text
    .split(/\r?\n/)
    .map((line) => line.trim())
    .filter((line) => line && !line.startsWith('#'));
}

/**
 * Encrypts `source` to the recipients as it flows: an age file, chunk by chunk, never the whole
 * plaintext in memory. Errors of `source` are forwarded.
 */
export async function encryptStream(source: Readable, recipients: string[]): Promise<Readable> {
  const encrypter = await ageEncrypter(recipients);
  source.once('error', (error) => encrypter.destroy(error));
  return source.pipe(encrypter);
}

/** A Transform that turns what is written into it into an age file for the recipients. */
export async function ageEncrypter(recipients: string[]): Promise<Transform> {
  if (recipients.length === 0) throw new Error('age encryption needs at least one recipient');
  const { header, fileKey } = await makeHeader(recipients);
  const nonce = randomBytes(NONCE);
  const encrypter = new StreamEncrypter(payloadKey(fileKey, nonce), Buffer.concat([header, nonce]));
  fileKey.fill(0);
  return encrypter;
}

/**
 * Decrypts an age file as it flows. Resolves once the header is verified (so a wrong key fails
 * here, before the caller starts anything); the returned stream then errors with a
 * DecryptionError if a chunk was modified or the file was cut short. Errors of `source` are
 * forwarded.
 */
export async function decryptStream(source: Readable, identities: string[]): Promise<Readable> {
  const decrypter = ageDecrypter(identities);
  source.once('error', (error) => decrypter.destroy(error));
  source.pipe(decrypter);
  await decrypter.headerChecked;
  return decrypter;
}

/**
 * A Transform that decrypts the age file written into it (for pipelines). A wrong key, a modified
 * or truncated file make it error with a DecryptionError; `headerChecked` settles with the header.
 */
export function ageDecrypter(identities: string[]): Transform & { readonly headerChecked: Promise<void> } {
  return new StreamDecrypter(identities);
}

/**
 * age's header for these recipients, and its file key. age-encryption makes the header; the file
 * key is handed to every Recipient, so a recipient that wraps nothing (no stanza) sees it too.
 */
async function makeHeader(recipients: string[]): Promise<{ header: Buffer; fileKey: Buffer }> {
  let fileKey: Buffer | undefined;
  const encrypter = new Encrypter();
  for (const recipient of recipients) encrypter.addRecipient(recipient);
  encrypter.addRecipient({
    wrapFileKey(key: Uint8Array): Stanza[] {
      fileKey = Buffer.from(key);
      return [];
    },
  });
  // An empty file: header || its 16-byte nonce || one empty final chunk (a 16-byte tag).
  const empty = await encrypter.encrypt(new Uint8Array(0));
  if (!fileKey) throw new Error('age-encryption did not hand out the file key');
  return { header: Buffer.from(empty.subarray(0, empty.length - NONCE - TAG)), fileKey };
}

/** The STREAM key: HKDF-SHA-256(file key, salt = nonce, info = "payload"). */
function payloadKey(fileKey: Uint8Array, nonce: Uint8Array): Buffer {
  return Buffer.from(hkdfSync('sha256', fileKey, nonce, 'payload', 32));
}

/** Chunk nonce: an 11-byte big-endian counter, then 1 on the last chunk. */
function chunkNonce(counter: number, last: boolean): Buffer {
  const nonce = Buffer.alloc(12);
  nonce.writeUIntBE(counter, 5, 6);
  nonce[11] = last ? 1 : 0;
  return nonce;
}

/** Buffered bytes, taken from the front in chunks. */
class ByteQueue {
  private parts: Buffer[] = [];
  length = 0;

  push(chunk: Buffer): void {
    if (chunk.length === 0) return;
    this.parts.push(chunk);
    this.length += chunk.length;
  }

  take(n: number): Buffer {
    const first = this.parts[0];
    if (first && first.length >= n) {
      const head = first.subarray(0, n);
      if (first.length === n) this.parts.shift();
      else this.parts[0] = first.subarray(n);
      this.length -= n;
      return head;
    }
    const all = Buffer.concat(this.parts);
    this.parts = all.length > n ? [all.subarray(n)] : [];
    this.length -= Math.min(n, all.length);
    return all.subarray(0, n);
  }
}

class StreamEncrypter extends Transform {
  private readonly queue = new ByteQueue();
  private counter = 0;

  constructor(
    private readonly key: Buffer,
    prefix: Buffer,
  ) {
    super({ highWaterMark: 1 << 20 });
    this.push(prefix);
  }

  override _transform(chunk: Buffer, _encoding: BufferEncoding, callback: TransformCallback): void {
    this.queue.push(chunk);
    // A full chunk is sealed only once more data follows: the last one carries the last flag.
    while (this.queue.length > CHUNK) this.push(this.seal(this.queue.take(CHUNK), false));
    callback();
  }

  override _flush(callback: TransformCallback): void {
    this.push(this.seal(this.queue.take(this.queue.length), true));
    this.key.fill(0);
    callback();
  }

  private seal(plaintext: Buffer, last: boolean): Buffer {
    const cipher = createCipheriv('chacha20-poly1305', this.key, chunkNonce(this.counter++, last), { authTagLength: TAG });
    return Buffer.concat([cipher.update(plaintext), cipher.final(), cipher.getAuthTag()]);
  }
}

class StreamDecrypter extends Transform {
  /** Resolves when the header MAC checked out with one of the identities. */
  readonly headerChecked: Promise<void>;
  private headerDone!: (error?: Error) => void;
  private readonly queue = new ByteQueue();
  private stage: 'header' | 'nonce' | 'payload' = 'header';
  private key: Buffer | undefined;
  private counter = 0;

  constructor(private readonly identities: string[]) {
    super({ highWaterMark: 1 << 20 });
    this.headerChecked = new Promise<void>((resolve, reject) => {
      this.headerDone = (error) => (error ? reject(error) : resolve());
    });
    // Whoever does not await it learns of a bad header through the stream's error instead.
    this.headerChecked.catch(() => undefined);
    this.once('error', (error) => this.headerDone(error));
  }

  override _transform(chunk: Buffer, _encoding: BufferEncoding, callback: TransformCallback): void {
    this.queue.push(chunk);
    this.advance(false).then(() => callback(), (error: Error) => callback(error));
  }

  override _flush(callback: TransformCallback): void {
    this.advance(true).then(() => callback(), (error: Error) => callback(error));
  }

  private async advance(ended: boolean): Promise<void> {
    if (this.stage === 'header') {
      const head = this.queue.take(this.queue.length);
      const end = headerEnd(head);
      if (end === undefined) {
        if (ended || head.length > MAX_HEADER) throw new DecryptionError('corrupt', 'not an age file: no complete age header (age-encryption.org/v1) at its start');
        this.queue.push(head);
        return;
      }
      this.queue.push(head.subarray(end));
      this.key = await this.fileKeyOf(head.subarray(0, end));
      this.stage = 'nonce';
      this.headerDone();
    }
    if (this.stage === 'nonce') {
      if (this.queue.length < NONCE) {
        if (ended) throw new DecryptionError('corrupt', 'the age file ends right after its header: truncated');
        return;
      }
      const fileKey = this.key!;
      this.key = payloadKey(fileKey, this.queue.take(NONCE));
      fileKey.fill(0);
      this.stage = 'payload';
    }
    // A full chunk is opened only once more data follows: only the last one may be flagged last.
    while (this.queue.length > CHUNK + TAG) this.push(this.open(this.queue.take(CHUNK + TAG), false));
    if (ended) {
      if (this.queue.length < TAG) throw new DecryptionError('corrupt', 'the age file is truncated (its last chunk is incomplete)');
      const last = this.queue.take(this.queue.length);
      const plaintext = this.open(last, true);
      if (plaintext.length === 0 && this.counter > 1) throw new DecryptionError('corrupt', 'the age file ends with an empty chunk: modified');
      this.push(plaintext);
      this.key!.fill(0);
    }
  }

  private async fileKeyOf(header: Buffer): Promise<Buffer> {
    const decrypter = new Decrypter();
    for (const identity of this.identities) decrypter.addIdentity(identity);
    try {
      return Buffer.from(await decrypter.decryptHeader(header));
    } catch (error) {
      const message = (error as Error).message;
      if (/no identity matched/i.test(message)) throw new DecryptionError('no-matching-identity', 'none of the configured identities can decrypt this file: it was encrypted to other recipients');
      throw new DecryptionError('corrupt', `the age header is invalid (${message}): the file was modified or is not an age file`);
    }
  }

  private open(sealed: Buffer, last: boolean): Buffer {
    const index = this.counter++;
    const decipher = createDecipheriv('chacha20-poly1305', this.key!, chunkNonce(index, last), { authTagLength: TAG });
    decipher.setAuthTag(sealed.subarray(sealed.length - TAG));
    try {
      return Buffer.concat([decipher.update(sealed.subarray(0, sealed.length - TAG)), decipher.final()]);
    } catch {
      throw new DecryptionError('corrupt', `chunk ${index} of the age payload failed authentication: the file was modified or truncated`);
    }
  }
}

/** Offset just past the header's MAC line ("--- <base64 MAC>\n"), or undefined if not all there yet. */
function headerEnd(bytes: Buffer): number | undefined {
  const mac = bytes.indexOf(MAC_LINE);
  if (mac < 0) return undefined;
  const newline = bytes.indexOf(0x0a, mac + MAC_LINE.length);
  return newline < 0 ? undefined : newline + 1;
}
