#!/usr/bin/env node
import { DefaultLogger } from '@temporalio/worker';
import { configureRuntime } from '../worker/runtime.js';
import { main } from './cli.js';

// The SDK's own INFO chatter (bundling, worker state) drowns the operator's output; warnings stay.
// A worker installs the runtime with this logger and its metrics exporter (worker/runtime.ts).
configureRuntime({ logger: new DefaultLogger((process.env.PGRUNBOOK_LOG_LEVEL as 'INFO' | undefined) ?? 'WARN') });

const code = await main(process.argv.slice(2));
// Temporal's native runtime can keep the event loop alive after everything is closed; a CLI
// command that has finished (and flushed its output) exits with its code.
process.stdout.write('', () => process.exit(code));
