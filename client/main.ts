#!/usr/bin/env node

import { enableCompileCache } from 'node:module';
import { userInfo } from 'node:os';
import { join } from 'node:path';

// wal-push and wal-fetch run as PostgreSQL's archive_command and restore_command, once per WAL
// segment: they load neither Temporal's native runtime nor the rest of the CLI (client/wal-main.ts).
const argv = process.argv.slice(2);
useCompileCache();
const code = argv[0] === 'wal-push' || argv[0] === 'wal-fetch' ? await (await import('./wal-main.js')).walMain(argv) : await cliMain(argv);
// Temporal's native runtime can keep the event loop alive after everything is closed; a CLI
// command that has finished (and flushed its output) exits with its code.
process.stdout.write('', () => process.exit(code));

async function cliMain(args: string[]): Promise<number> {
  const { DefaultLogger } = await import('@temporalio/worker');
  const { configureRuntime } = await import('../worker/runtime.js');
  // The SDK's own INFO chatter (bundling, worker state) drowns the operator's output; warnings stay.
  // A worker installs the runtime with this logger and its metrics exporter (worker/runtime.ts).
  configureRuntime({ logger: new DefaultLogger((process.env.PGRUNBOOK_LOG_LEVEL as 'INFO' | undefined) ?? 'WARN') });
  const { main } = await import('./cli.js');
  return main(args);
}

/**
 * Node's on-disk compile cache: later processes skip parsing and compiling the modules they load
 * (most of a wal-push's start-up is compiling zod, yaml and the config schema). Per user, in the
 * account's own home from the password database (not $HOME, which archive_command may inherit
 * from whoever started the server), so the server user and an operator never share or poison one
 * cache. Best effort: a cache that cannot be written is skipped, never an error.
 */
function useCompileCache(): void {
  try {
    enableCompileCache(join(userInfo().homedir, '.cache', 'pgrunbook', 'node-compile-cache'));
  } catch {
    // No password entry, or a Node without the cache: run uncached.
  }
}
