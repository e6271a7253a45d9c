import { chownSync, existsSync, mkdirSync, readFileSync, rmSync, writeFileSync, appendFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { runTool } from '../process/run.js';
import { asServerUser, isRoot, postgresUid } from './server-user.js';

// The disposable target of a restore drill (seed 001 §5 "provision test environment"): a
// PostgreSQL cluster initdb'd from the worker host's binaries into a directory named after the
// drill, started on a free port, and removed afterwards. Every function here is idempotent, so a
// worker that dies mid-drill leaves nothing a retried step cannot converge or tear down.
//
// The cluster listens on a Unix socket inside its own directory only (no TCP), with `trust`
// authentication: no password exists to leak, and nothing outside this host (and, the directory
// being 0700, nobody but its owner and root) can reach it.

/** Written once the cluster is fully initialised; a directory without it is a half-made cluster. */
const MARKER = 'pgrunbook-drill.json';
const NAME = /^pgrunbook-drill-[a-z0-9_-]+-\d{14}$/;

export interface DrillCluster {
  /** The cluster's directory: data in `data/`, the socket and the server log beside it. */
  dir: string;
  port: number;
  binDir: string;
  /** libpq host: the socket directory. */
  socketDir: string;
}

interface Marker {
  port: number;
  binDir: string;
  createdAt: string;
}

export function drillClusterName(database: string, stamp: string): string {
  return `pgrunbook-drill-${database}-${stamp}`;
}

export function isDrillClusterDir(dir: string): boolean {
  return NAME.test(dir.split('/').filter(Boolean).at(-1) ?? '');
}

function readMarker(dir: string): Marker | undefined {
  try {
    return JSON.parse(readFileSync(join(dir, MARKER), 'utf8')) as Marker;
  } catch {
    return undefined;
  }
}

/**
 * Creates and starts the cluster, or finds the one an earlier attempt made. A directory that an
 * attempt left half-made (no marker) is removed and made again.
 */
export async function provisionDrillCluster(options: { dir: string; binDir: string; port: () => Promise<number> }): Promise<DrillCluster> {
  const { dir, binDir } = options;
  if (!isDrillClusterDir(dir)) throw new Error(`refusing to create a drill cluster in ${dir}: not a drill cluster directory name`);
  const asPostgres = isRoot();
  const dataDir = join(dir, 'data');
  let marker = readMarker(dir);
  if (!marker) {
    rmSync(dir, { recursive: true, force: true });
    // The parent must be traversable by the server's user (postgres, when the worker is root).
    mkdirSync(dirname(dir), { recursive: true, mode: 0o755 });
    mkdirSync(dir, { mode: 0o700 });
    if (asPostgres) {
      const { uid, gid } = postgresUid();
      chownSync(dir, uid, gid);
    }
    const [initFile, initArgs] = asServerUser(asPostgres, join(binDir, 'initdb'), [
      '-D', dataDir, '-U', 'postgres', '--auth=trust', '--encoding=UTF8', '--locale=C', '--no-instructions', '--no-sync',
    ]);
    await runTool(initFile, initArgs, { cwd: dir });
    const port = await options.port();
    const settings: Record<string, string | number> = {
      listen_addresses: "''",
      port,
      unix_socket_directories: `'${dir}'`,
      unix_socket_permissions: '0700',
      // A disposable copy: durability costs time and proves nothing here.
      fsync: 'off',
      synchronous_commit: 'off',
      full_page_writes: 'off',
      max_connections: 50,
    };
    appendFileSync(join(dataDir, 'postgresql.conf'), Object.entries(settings).map(([k, v]) => `${k} = ${v}\n`).join(''));
    marker = { port, binDir, createdAt: new Date().toISOString() };
    writeFileSync(join(dir, MARKER), JSON.stringify(marker));
  }
  if (!existsSync(join(dataDir, 'postmaster.pid'))) {
    const [ctlFile, ctlArgs] = asServerUser(asPostgres, join(marker.binDir, 'pg_ctl'), ['-D', dataDir, '-l', join(dir, 'server.log'), '-w', '-t', '120', 'start']);
    try {
      await runTool(ctlFile, ctlArgs, { cwd: dir });
    } catch (error) {
      const log = join(dir, 'server.log');
      throw new Error(`the drill cluster in ${dir} did not start: ${(error as Error).message}${existsSync(log) ? `\n${readFileSync(log, 'utf8').slice(-1500)}` : ''}`);
    }
  }
  return { dir, port: marker.port, binDir: marker.binDir, socketDir: dir };
}

/** Stops the server at once and removes the directory. Idempotent; refuses non-drill directories. */
export async function removeDrillCluster(dir: string): Promise<{ removed: boolean }> {
  if (!isDrillClusterDir(dir)) throw new Error(`refusing to remove ${dir}: not a drill cluster directory`);
  if (!existsSync(dir)) return { removed: false };
  const dataDir = join(dir, 'data');
  const binDir = readMarker(dir)?.binDir;
  if (binDir && existsSync(join(dataDir, 'postmaster.pid'))) {
    const [file, args] = asServerUser(isRoot(), join(binDir, 'pg_ctl'), ['-D', dataDir, '-m', 'immediate', '-w', '-t', '60', 'stop']);
    try {
      await runTool(file, args, { cwd: dir });
    } catch (error) {
      // A stale pid file of a server that is already gone: pg_ctl says so; anything else is real.
      if (!/PID file .* does not exist|Is server running\?|no server running|No such process/i.test((error as Error).message)) throw error;
    }
  }
  rmSync(dir, { recursive: true, force: true });
  return { removed: true };
}
