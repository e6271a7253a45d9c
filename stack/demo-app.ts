import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { CommandAppConfig } from '../app-controllers/schema.js';

/**
 * The demo application (demo-app-process) run by shell commands: what an operator would write in
 * an `app: {type: command}` config for a process they manage with a pid file. Tests and the demo
 * use it to show that the app held connections, was stopped, and came back healthy.
 */
export interface DemoAppOptions {
  /** Written by the app once it serves /health; removed when it exits. */
  pidFile: string;
  /** HTTP port of GET /health on 127.0.0.1. */
  port: number;
  /** Name of the environment variable (in the worker's environment) holding the database URL. */
  urlEnv: string;
  /** Connections the app holds. Default 3. */
  connections?: number;
  /** The app's stdout and stderr. Default: next to the pid file. */
  logFile?: string;
  /** Node binary. Default: the one running this process. */
  node?: string;
  /** Seconds the start and stop commands may take (timeoutSeconds). Default 60. */
  timeoutSeconds?: number;
  /** health.timeoutSeconds. Default 60. */
  healthTimeoutSeconds?: number;
}

/** The app's entry point: compiled JavaScript under dist/, else the TypeScript source (Node strips the types). */
export function demoAppScript(): string {
  const here = dirname(fileURLToPath(import.meta.url));
  const compiled = join(here, 'demo-app-process.js');
  return existsSync(compiled) ? compiled : join(here, 'demo-app-process.ts');
}

/** Single-quotes a word for /bin/sh. */
function sh(word: string): string {
  return `'${word.replace(/'/g, `'\\''`)}'`;
}

/**
 * An app config of type `command` that starts the demo app detached (idempotent: does nothing
 * while the pid file names a live process; returns once /health is served) and stops it with
 * SIGTERM, waiting until it has exited (idempotent: nothing to do without a pid file). Its
 * `health.url` is the app's /health.
 */
export function demoAppCommandConfig(options: DemoAppOptions): CommandAppConfig {
  const pid = sh(options.pidFile);
  const log = sh(options.logFile ?? `${options.pidFile}.log`);
  const node = sh(options.node ?? process.execPath);
  const args = ['--port', String(options.port), '--url-env', options.urlEnv, '--connections', String(options.connections ?? 3), '--pid-file', options.pidFile].map(sh).join(' ');
  const start = [
    `if [ -f ${pid} ] && kill -0 "$(cat ${pid})" 2>/dev/null; then exit 0; fi`,
    `rm -f ${pid}`,
    // setsid + nohup: the app outlives this shell, its process group and the worker's terminal.
    `setsid nohup ${node} ${sh(demoAppScript())} ${args} >>${log} 2>&1 </dev/null &`,
    'child=$!',
    'i=0',
    `while [ ! -f ${pid} ]; do`,
    `  if ! kill -0 "$child" 2>/dev/null; then echo "demo app exited at start:" >&2; tail -n 20 ${log} >&2; exit 1; fi`,
    '  i=$((i+1)); if [ "$i" -gt 300 ]; then echo "demo app did not start within 30s" >&2; exit 1; fi',
    '  sleep 0.1',
    'done',
  ].join('\n');
  const stop = [
    `[ -f ${pid} ] || exit 0`,
    `p=$(cat ${pid})`,
    `kill -TERM "$p" 2>/dev/null || { rm -f ${pid}; exit 0; }`,
    'i=0',
    // The app removes its pid file as its last act; a process that died without doing so is gone too.
    `while [ -f ${pid} ] && kill -0 "$p" 2>/dev/null; do`,
    `  i=$((i+1)); if [ "$i" -gt 200 ]; then kill -KILL "$p" 2>/dev/null; sleep 0.2; break; fi`,
    '  sleep 0.1',
    'done',
    `rm -f ${pid}`,
  ].join('\n');
  return {
    type: 'command',
    start,
    stop,
    status: `if [ -f ${pid} ] && kill -0 "$(cat ${pid})" 2>/dev/null; then echo running; else echo stopped; fi`,
    timeoutSeconds: options.timeoutSeconds ?? 60,
    health: { url: `http://127.0.0.1:${options.port}/health`, timeoutSeconds: options.healthTimeoutSeconds ?? 60, intervalSeconds: 0.5 },
  };
}
