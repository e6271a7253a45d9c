import { chownSync, mkdtempSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { isRoot, postgresUid } from '../../postgres/server-user.js';
import { LocalRepository } from '../../repository/local/local-repository.js';
import { writeAll } from '../../repository/types.js';

// One local repository, several writers: a root worker's base backups and the server user's
// wal-push. Folders a root worker creates take the repository root's owner.
const dir = mkdtempSync(join(tmpdir(), 'pgrunbook-owner-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe.runIf(isRoot())('a local repository written by a root worker', () => {
  it("gives the folders it creates the repository root's owner, so the server user can add WAL beside them", async () => {
    const { uid, gid } = postgresUid();
    const root = join(dir, 'repo');
    const repository = new LocalRepository('local', root);
    await writeAll(repository, 'first.txt', 'x'); // creates the root itself, owned by root
    chownSync(root, uid, gid);
    await writeAll(repository, 'pitr/main/base/20261122T010000Z/manifest.json', '{}');
    for (const folder of ['pitr', 'pitr/main', 'pitr/main/base', 'pitr/main/base/20261122T010000Z']) {
      expect(statSync(join(root, folder)).uid, folder).toBe(uid);
      expect(statSync(join(root, folder)).gid, folder).toBe(gid);
    }
    // Files stay the writer's (readable by all); only folders matter for adding files.
    expect(statSync(join(root, 'pitr/main/base/20261122T010000Z/manifest.json')).mode & 0o004).toBe(0o004);
  });

  it('leaves ownership alone when the repository root belongs to root', async () => {
    const root = join(dir, 'root-owned');
    const repository = new LocalRepository('local', root);
    await writeAll(repository, 'a/b/c.txt', 'x');
    expect(statSync(join(root, 'a/b')).uid).toBe(0);
  });
});
