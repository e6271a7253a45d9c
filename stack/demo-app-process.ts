// A small real application for tests and the demo: it holds N connections to a database, runs a
// query on each every ~200 ms, and answers GET /health with 200 while all of them work (503
// otherwise). Broken connections (a restore terminated them) are replaced on the next tick.
//
//   node demo-app-process.js --port 8080 --url-env DEMO_APP_DATABASE_URL [--connections 3] [--pid-file app.pid]
//
// The database URL (it holds a password) comes from the environment variable named by --url-env,
// never from argv. The pid file is written once /health is served and removed on exit, so a stop
// script can wait for it to disappear. Self-contained (node built-ins and pg only) so that Node
// runs this file directly from source too, by type stripping.
import { createServer } from 'node:http';
import { renameSync, rmSync, writeFileSync } from 'node:fs';
import pg from 'pg';

function option(name: string, fallback?: string): string {
  const i = process.argv.indexOf(`--${name}`);
  const value = i >= 0 ? process.argv[i + 1] : fallback;
  if (value === undefined) {
    process.stderr.write(`demo app: --${name} is required\n`);
    process.exit(2);
  }
  return value;
}

const port = Number(option('port'));
const urlEnv = option('url-env');
const connections = Number(option('connections', '3'));
const pidFile = option('pid-file', '');
const databaseUrl = process.env[urlEnv];
if (!databaseUrl) {
  process.stderr.write(`demo app: the environment variable ${urlEnv} (--url-env) holds no database URL\n`);
  process.exit(2);
}

type Slot = { client?: pg.Client; healthy: boolean; lastError?: string; busy: boolean };
const slots: Slot[] = Array.from({ length: connections }, () => ({ healthy: false, busy: false }));

async function tick(slot: Slot): Promise<void> {
  if (slot.busy) return;
  slot.busy = true;
  try {
    if (!slot.client) {
      const client = new pg.Client({ connectionString: databaseUrl, application_name: 'pgrunbook-demo-app', connectionTimeoutMillis: 2_000 });
      client.on('error', (error) => {
        slot.healthy = false;
        slot.lastError = error.message;
        if (slot.client === client) slot.client = undefined;
        client.end().catch(() => undefined);
      });
      slot.client = client;
      await client.connect();
    }
    await slot.client.query({ text: 'SELECT 1', query_timeout: 2_000 } as pg.QueryConfig);
    slot.healthy = true;
    slot.lastError = undefined;
  } catch (error) {
    slot.healthy = false;
    slot.lastError = (error as Error).message;
    const broken = slot.client;
    slot.client = undefined;
    await broken?.end().catch(() => undefined);
  } finally {
    slot.busy = false;
  }
}

const timer = setInterval(() => {
  for (const slot of slots) void tick(slot);
}, 200);
for (const slot of slots) void tick(slot);

const server = createServer((req, res) => {
  if (req.url !== '/health') {
    res.writeHead(404).end();
    return;
  }
  const healthy = slots.filter((s) => s.healthy).length;
  const ok = healthy === slots.length;
  res.writeHead(ok ? 200 : 503, { 'content-type': 'application/json' });
  // Connection errors name host and database at most; the URL itself is never echoed.
  res.end(JSON.stringify({ status: ok ? 'ok' : 'degraded', connections: slots.length, healthy, lastError: slots.find((s) => s.lastError)?.lastError }));
});

server.listen(port, '127.0.0.1', () => {
  if (!pidFile) return;
  writeFileSync(`${pidFile}.tmp`, `${process.pid}\n`);
  renameSync(`${pidFile}.tmp`, pidFile);
});

let stopping = false;
async function shutdown(): Promise<void> {
  if (stopping) return;
  stopping = true;
  clearInterval(timer);
  server.close();
  await Promise.all(slots.map((s) => s.client?.end().catch(() => undefined)));
  if (pidFile) rmSync(pidFile, { force: true });
  process.exit(0);
}
process.on('SIGTERM', () => void shutdown());
process.on('SIGINT', () => void shutdown());
