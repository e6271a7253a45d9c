import { randomBytes } from 'node:crypto';
import { createReadStream, createWriteStream } from 'node:fs';
import { chown, mkdir, open, readdir, rename, rm, rmdir, stat, unlink } from 'node:fs/promises';
import { basename, dirname, join, relative, sep } from 'node:path';
import type { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import type { FileWrite, ObjectInfo, Repository } from '../types.js';

// In-progress writes live next to their final name as ".<name>.<random>.partial" and are never
// listed; publishing is fsync + rename + fsync of the directory.
const PARTIAL = /^\..+\.[0-9a-f]{12}\.partial$/;

export class LocalRepository implements Repository {
  readonly location: string;

  constructor(
    readonly id: string,
    private readonly root: string,
  ) {
    this.location = root;
  }

  private path(key: string): string {
    const path = join(this.root, ...key.split('/'));
    if (!path.startsWith(this.root + sep)) throw new Error(`key escapes the repository: ${key}`);
    return path;
  }

  async write(key: string, body: Readable, options: { signal?: AbortSignal } = {}): Promise<{ size: number }> {
    const file = await this.openFileWrite(key);
    try {
      await pipeline(body, createWriteStream(file.path, { flags: 'wx' }), { signal: options.signal });
      return await file.publish();
    } catch (error) {
      await file.discard();
      throw error;
    }
  }

  async localFile(key: string): Promise<string | undefined> {
    return (await this.stat(key)) ? this.path(key) : undefined;
  }

  async openFileWrite(key: string): Promise<FileWrite> {
    const target = this.path(key);
    const created = await mkdir(dirname(target), { recursive: true });
    if (created !== undefined) await this.adoptRootOwner(created, dirname(target));
    const temp = join(dirname(target), `.${basename(target)}.${randomBytes(6).toString('hex')}.partial`);
    return {
      path: temp,
      publish: async () => {
        const handle = await open(temp, 'r');
        try {
          await handle.sync();
        } finally {
          await handle.close();
        }
        const { size } = await stat(temp);
        await rename(temp, target);
        await syncDirectory(dirname(target));
        return { size };
      },
      discard: () => unlink(temp).catch(() => undefined),
    };
  }

  /**
   * A worker running as root gives folders it creates (`created` down to `deepest`) the owner of
   * the repository root. Several programs write one repository: PostgreSQL's archive_command
   * (`pgrunbook wal-push`, as the server's user) must still be able to add WAL under pitr/<cluster>/
   * after a root worker made that folder for a base backup.
   */
  private async adoptRootOwner(created: string, deepest: string): Promise<void> {
    if (process.getuid?.() !== 0) return;
    const owner = await stat(this.root);
    if (owner.uid === 0 && owner.gid === 0) return;
    for (let dir = deepest; dir.length >= created.length && dir.startsWith(this.root + sep); dir = dirname(dir)) {
      await chown(dir, owner.uid, owner.gid);
    }
  }

  async read(key: string, options: { signal?: AbortSignal } = {}): Promise<Readable> {
    const path = this.path(key);
    // Open eagerly so a missing key fails here, not on the first read.
    const handle = await open(path, 'r');
    // The stream owns the FileHandle and closes it; never pass its bare fd (GC would close it twice).
    return createReadStream(path, { fd: handle, signal: options.signal, highWaterMark: 1 << 20 });
  }

  async stat(key: string): Promise<ObjectInfo | undefined> {
    try {
      const s = await stat(this.path(key));
      return s.isFile() ? { key, size: s.size, modified: s.mtime } : undefined;
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
      throw error;
    }
  }

  async list(prefix: string): Promise<ObjectInfo[]> {
    return this.walk(prefix, (name) => (PARTIAL.test(name) ? undefined : name));
  }

  async listIncompleteWrites(prefix: string): Promise<ObjectInfo[]> {
    // ".<name>.<12 hex>.partial" is an unpublished write to "<name>".
    return this.walk(prefix, (name) => (PARTIAL.test(name) ? name.slice(1, -'.0123456789ab.partial'.length) : undefined));
  }

  /** Files under the deepest directory `prefix` names, keyed by `keyName` (undefined: skipped), sorted by key. */
  private async walk(prefix: string, keyName: (name: string) => string | undefined): Promise<ObjectInfo[]> {
    const out: ObjectInfo[] = [];
    const walk = async (dir: string): Promise<void> => {
      let entries;
      try {
        entries = await readdir(dir, { withFileTypes: true });
      } catch (error) {
        if ((error as NodeJS.ErrnoException).code === 'ENOENT') return;
        throw error;
      }
      for (const entry of entries) {
        const path = join(dir, entry.name);
        if (entry.isDirectory()) await walk(path);
        else if (entry.isFile()) {
          const name = keyName(entry.name);
          if (name === undefined) continue;
          const key = relative(this.root, join(dir, name)).split(sep).join('/');
          if (!key.startsWith(prefix)) continue;
          const s = await stat(path).catch(() => undefined);
          if (s) out.push({ key, size: s.size, modified: s.mtime });
        }
      }
    };
    // Walk only the deepest directory the prefix names.
    const dirPart = prefix.includes('/') ? prefix.slice(0, prefix.lastIndexOf('/')) : '';
    await walk(dirPart ? this.path(dirPart) : this.root);
    return out.sort((a, b) => a.key.localeCompare(b.key));
  }

  async delete(key: string): Promise<void> {
    const path = this.path(key);
    await rm(path, { force: true });
    // Like S3, where a folder is only a prefix: one left empty goes with its last file.
    for (let dir = dirname(path); dir.startsWith(this.root + sep); dir = dirname(dir)) {
      try {
        await rmdir(dir);
      } catch {
        break; // not empty (or already gone): its parents are not empty either
      }
    }
  }

  async removeIncompleteWrites(key: string): Promise<number> {
    const target = this.path(key);
    let entries: string[];
    try {
      entries = await readdir(dirname(target));
    } catch {
      return 0;
    }
    // Exactly this key's partials: ".<name>.<12 hex>.partial", not those of "<name>.gz" and the like.
    const name = basename(target);
    const mine = entries.filter((entry) => entry.length === name.length + 22 && entry.startsWith(`.${name}.`) && PARTIAL.test(entry));
    await Promise.all(mine.map((entry) => rm(join(dirname(target), entry), { force: true })));
    return mine.length;
  }
}

async function syncDirectory(dir: string): Promise<void> {
  const handle = await open(dir, 'r');
  try {
    await handle.sync();
  } finally {
    await handle.close();
  }
}
