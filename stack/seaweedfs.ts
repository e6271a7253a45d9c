import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { closeSync, existsSync, mkdtempSync, openSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { connect, createServer } from 'node:net';
import { join } from 'node:path';
import { CreateBucketCommand, ListBucketsCommand, S3Client } from '@aws-sdk/client-s3';
import { registerSecret, scrubSecrets } from '../process/secrets.js';
import { weedBinary } from './binaries.js';
import { freePort } from './ports.js';

/**
 * A throwaway SeaweedFS S3 server (`weed mini`): loopback only, every port picked fresh, a fresh
 * data directory, real SigV4 authentication with per-start random credentials. Used by tests,
 * benchmarks and `pgrunbook dev`. Only the S3 API is authenticated; the master, volume, filer and
 * admin HTTP ports it also opens on 127.0.0.1 are not, so this is for local throwaway data only.
 */
export interface S3Server {
  readonly endpoint: string;
  readonly region: 'us-east-1';
  readonly accessKeyId: string;
  readonly secretAccessKey: string;
  /** A bucket created at start. */
  readonly bucket: string;
  readonly dataDir: string;
  createBucket(name: string): Promise<void>;
  /** Stops weed, waits for it to exit and removes the data directory. Idempotent. */
  stop(): Promise<void>;
}

export interface StartS3ServerOptions {
  /** Name of the bucket created at start (default 'pgrunbook-test'). */
  bucket?: string;
}

const READY_TIMEOUT_MS = 60_000;
// weed refuses to start when an explicitly given port is taken (it does not pick another one), so
// losing the race between freePort() and weed's bind shows up as an early exit; retry with new ports.
const START_ATTEMPTS = 3;

const running = new Map<ChildProcess, { dataDir: string; grpcPorts: GrpcPorts }>();

// A test runner that dies must not leave weed processes (or their data) behind. Only synchronous
// work is possible here; the sockets can go unchecked since this weed still holds their ports.
process.once('exit', () => {
  for (const [child, { dataDir, grpcPorts }] of running) {
    child.kill('SIGKILL');
    rmSync(dataDir, { recursive: true, force: true });
    for (const path of grpcSocketPaths(grpcPorts)) rmSync(path, { force: true });
  }
});

export async function startS3Server(options: StartS3ServerOptions = {}): Promise<S3Server> {
  for (let attempt = 1; ; attempt++) {
    try {
      return await startOnce(options.bucket ?? 'pgrunbook-test');
    } catch (error) {
      if (!(error instanceof StartError && error.portTaken) || attempt >= START_ATTEMPTS) throw error;
    }
  }
}

class StartError extends Error {
  override readonly name = 'StartError';
  constructor(message: string, readonly portTaken: boolean) {
    super(message);
  }
}

async function startOnce(bucket: string): Promise<S3Server> {
  const weed = weedBinary();
  const dataDir = mkdtempSync(join(tmpdir(), 'pgrunbook-s3-'));
  const logPath = join(dataDir, 'weed.log');
  const accessKeyId = `PGRB${randomBytes(8).toString('hex').toUpperCase()}`;
  const secretAccessKey = randomBytes(30).toString('base64url');
  registerSecret(secretAccessKey);

  // Static identity file: SeaweedFS enforces SigV4 for any request once an identity exists.
  const configPath = join(dataDir, 's3.json');
  const identity = { name: 'pgrunbook', credentials: [{ accessKey: accessKeyId, secretKey: secretAccessKey }], actions: ['Admin', 'Read', 'Write', 'List', 'Tagging'] };
  writeFileSync(configPath, JSON.stringify({ identities: [identity] }), { mode: 0o600 });

  // Unset ports default to fixed numbers (9333, 8888, ... and HTTP port + 10000 for gRPC), which
  // parallel instances would fight over: every listener gets its own free port.
  const taken = new Set<number>();
  const admin = await freeAdminPorts(taken);
  const pair = async (): Promise<{ http: number; grpc: number }> => ({ http: await freePortNotIn(taken), grpc: await freePortNotIn(taken) });
  const [master, volume, filer, s3] = [await pair(), await pair(), await pair(), await pair()];
  const grpcPorts: GrpcPorts = { master: master.grpc, volume: volume.grpc, filer: filer.grpc, s3: s3.grpc, admin: admin.grpc };
  const args = [
    // Everything (including glog's info lines) to stderr, which goes to weed.log.
    '-logtostderr',
    'mini',
    `-dir=${dataDir}`,
    '-ip=127.0.0.1',
    '-ip.bind=127.0.0.1',
    '-master.telemetry=false',
    `-master.port=${master.http}`,
    `-master.port.grpc=${master.grpc}`,
    `-volume.port=${volume.http}`,
    `-volume.port.grpc=${volume.grpc}`,
    `-filer.port=${filer.http}`,
    `-filer.port.grpc=${filer.grpc}`,
    `-s3.port=${s3.http}`,
    `-s3.port.grpc=${s3.grpc}`,
    // The admin server (and its maintenance workers) starts even with -admin.ui=false.
    `-admin.port=${admin.http}`,
    `-admin.port.grpc=${admin.grpc}`,
    '-admin.ui=false',
    // Only served with -debug, but never leave a port at its fixed default.
    `-debug.port=${await freePortNotIn(taken)}`,
    '-webdav=false',
    '-s3.port.iceberg=0',
    '-s3.port.lance=0',
    // These Unix sockets default to /tmp/seaweedfs-*-<port>.sock; keep them with the data.
    `-filer.localSocket=${join(dataDir, 'filer.sock')}`,
    `-s3.localSocket=${join(dataDir, 's3.sock')}`,
    `-s3.config=${configPath}`,
    // No need to wait a second for heartbeats to drain on shutdown of a throwaway server.
    '-volume.preStopSeconds=0',
  ];

  const log = openSync(logPath, 'a');
  let child: ChildProcess;
  try {
    child = spawn(weed, args, { cwd: dataDir, env: weedEnv(dataDir), stdio: ['ignore', log, log] });
  } finally {
    closeSync(log);
  }
  running.set(child, { dataDir, grpcPorts });
  let spawnError: Error | undefined;
  const exited = new Promise<void>((resolve) => {
    child.once('exit', () => resolve());
    // A failed spawn (ENOENT, EACCES) emits 'error' and no 'exit'.
    child.once('error', (error) => {
      if (child.pid === undefined) {
        spawnError = error;
        resolve();
      }
    });
  });
  const alive = (): boolean => child.pid !== undefined && child.exitCode === null && child.signalCode === null;

  const endpoint = `http://127.0.0.1:${s3.http}`;
  const client = new S3Client({ endpoint, region: 'us-east-1', forcePathStyle: true, credentials: { accessKeyId, secretAccessKey } });

  let stopping: Promise<void> | undefined;
  const stop = (): Promise<void> => {
    stopping ??= (async () => {
      client.destroy();
      // SIGKILL rather than SIGTERM: the data is thrown away anyway, and weed's graceful shutdown
      // takes over a second and occasionally stalls for 10 s (seen under parallel test load).
      if (alive()) {
        child.kill('SIGKILL');
        await exited;
      }
      running.delete(child);
      rmSync(dataDir, { recursive: true, force: true });
      await removeStaleGrpcSockets(grpcPorts);
    })();
    return stopping;
  };

  try {
    const deadline = Date.now() + READY_TIMEOUT_MS;
    let lastError: unknown;
    for (;;) {
      if (!alive()) {
        await exited;
        throw spawnError ?? new Error(`weed exited during startup (${child.exitCode ?? child.signalCode})`);
      }
      try {
        // A signed request, so this waits for the S3 gateway *and* its identity config, not just the port.
        await client.send(new ListBucketsCommand({}), { abortSignal: AbortSignal.timeout(2_000) });
        break;
      } catch (error) {
        lastError = error;
      }
      if (Date.now() > deadline) throw new Error(`S3 API not ready after ${READY_TIMEOUT_MS} ms: ${(lastError as Error | undefined)?.message}`);
      await new Promise((r) => setTimeout(r, 200));
    }
    await client.send(new CreateBucketCommand({ Bucket: bucket }));
  } catch (error) {
    const tail = logTail(logPath);
    const portTaken = !alive() && /not available|address already in use/i.test(tail);
    await stop();
    throw new StartError(
      scrubSecrets(`could not start SeaweedFS (${weed} mini) in ${dataDir}: ${(error as Error).message}${tail ? `\n--- weed.log (tail) ---\n${tail}` : ''}`),
      portTaken,
    );
  }

  return {
    endpoint,
    region: 'us-east-1',
    accessKeyId,
    secretAccessKey,
    bucket,
    dataDir,
    createBucket: async (name) => {
      await client.send(new CreateBucketCommand({ Bucket: name }));
    },
    stop,
  };
}

/**
 * The parent's environment minus what `weed mini` would act on: AWS_ACCESS_KEY_ID/SECRET create an
 * extra 'mini' identity, S3_BUCKET/S3_* pre-create buckets, WEED_* override its configuration.
 */
function weedEnv(dataDir: string): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [key, value] of Object.entries(process.env)) {
    if (!/^(AWS_|S3_|WEED_)/.test(key)) env[key] = value;
  }
  // Anything weed puts in the temp dir (glog files, caches) goes away with the data.
  env.TMPDIR = dataDir;
  return env;
}

/** A free port not handed out yet for this instance (freePort() may return the same one twice). */
async function freePortNotIn(taken: Set<number>): Promise<number> {
  for (;;) {
    const port = await freePort();
    if (!taken.has(port)) {
      taken.add(port);
      return port;
    }
  }
}

/**
 * The maintenance workers `weed mini` always starts dial the admin server's gRPC at its HTTP port
 * + 10000, ignoring -admin.port.grpc. Pick a pair that fits that rule, or they would retry forever
 * (or worse, reach another instance's admin server).
 */
async function freeAdminPorts(taken: Set<number>): Promise<{ http: number; grpc: number }> {
  for (let i = 0; i < 50; i++) {
    const http = await freePort();
    const grpc = http + 10_000;
    if (grpc <= 65_535 && !taken.has(http) && !taken.has(grpc) && (await canListen(grpc))) {
      taken.add(http).add(grpc);
      return { http, grpc };
    }
  }
  throw new Error('found no free port pair (p, p + 10000) for the SeaweedFS admin server');
}

function canListen(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const server = createServer();
    server.once('error', () => resolve(false));
    server.listen(port, '127.0.0.1', () => server.close(() => resolve(true)));
  });
}

type GrpcPorts = Record<'master' | 'volume' | 'filer' | 's3' | 'admin', number>;

function grpcSocketPaths(grpcPorts: GrpcPorts): string[] {
  return Object.entries(grpcPorts).map(([service, port]) => `/tmp/seaweedfs-${service}-grpc-${port}.sock`);
}

/**
 * weed serves gRPC on /tmp/seaweedfs-<service>-grpc-<port>.sock too (no flag moves them) and does
 * not always remove them on exit. Delete the ones nobody answers on: a live socket may already
 * belong to a newer instance that got the same port.
 */
async function removeStaleGrpcSockets(grpcPorts: GrpcPorts): Promise<void> {
  await Promise.all(
    grpcSocketPaths(grpcPorts).filter((path) => existsSync(path)).map(
      (path) =>
        new Promise<void>((resolve) => {
          const socket = connect(path);
          socket.once('connect', () => {
            socket.destroy();
            resolve();
          });
          socket.once('error', (error: NodeJS.ErrnoException) => {
            if (error.code === 'ECONNREFUSED') rmSync(path, { force: true });
            resolve();
          });
        }),
    ),
  );
}

function logTail(path: string, chars = 3_000): string {
  return existsSync(path) ? readFileSync(path, 'utf8').slice(-chars).trim() : '';
}
