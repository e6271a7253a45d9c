import { chmodSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { createComposeController } from '../../app-controllers/compose/controller.js';
import { ComposeAppConfig } from '../../app-controllers/schema.js';

// There is no Docker engine on these machines (DESIGN.md), so this is a unit test of the argv the
// controller hands to `docker compose` and of how it reads the answers: a small fake `docker`
// records its arguments and keeps the set of running services in a file.
const FAKE_DOCKER = `#!/bin/sh
dir=$(dirname "$0")
printf '%s\\n' "$*" >> "$dir/argv.log"
[ -f "$dir/fail" ] && { cat "$dir/fail" >&2; exit 17; }
# skip: compose -f FILE [-p NAME]
shift; shift; shift
[ "$1" = "-p" ] && { shift; shift; }
cmd=$1; shift
case "$cmd" in
  ps) cat "$dir/running" ;;
  stop) for s in "$@"; do grep -vx "$s" "$dir/running" > "$dir/running.new"; mv "$dir/running.new" "$dir/running"; done ;;
  start) for s in "$@"; do echo "$s" >> "$dir/running"; done ;;
  *) echo "unknown command $cmd" >&2; exit 1 ;;
esac
`;

describe('compose app controller (argv handling, fake docker)', () => {
  let dir: string;
  let docker: string;
  const signal = new AbortController().signal;

  beforeAll(() => {
    dir = mkdtempSync(join(tmpdir(), 'pgrunbook-compose-'));
    docker = join(dir, 'docker');
    writeFileSync(docker, FAKE_DOCKER);
    chmodSync(docker, 0o755);
  });

  afterAll(() => {
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  beforeEach(() => {
    writeFileSync(join(dir, 'argv.log'), '');
    // db runs but is not ours to stop; cron is configured but was stopped on purpose.
    writeFileSync(join(dir, 'running'), 'db\napi\nworker\n');
    rmSync(join(dir, 'fail'), { force: true });
  });

  const argv = (): string[] => readFileSync(join(dir, 'argv.log'), 'utf8').trim().split('\n').filter(Boolean);
  const running = (): string[] => readFileSync(join(dir, 'running'), 'utf8').trim().split('\n').filter(Boolean).sort();
  const controller = (extra: Record<string, unknown> = {}) =>
    createComposeController(ComposeAppConfig.parse({ type: 'compose', file: '/srv/shop/compose.yaml', services: ['api', 'worker', 'cron'], docker, ...extra }), process.env);

  it('capture remembers which configured services were running; stop stops them all; start starts only those', async () => {
    const app = controller({ projectName: 'shop' });
    const snapshot = await app.capture(signal);
    expect(snapshot).toEqual({ controller: 'compose', running: ['api', 'worker'] });
    await app.stop(snapshot, signal);
    expect(running()).toEqual(['db']);
    await app.start(snapshot, signal);
    expect(running()).toEqual(['api', 'db', 'worker']);
    expect(argv()).toEqual([
      'compose -f /srv/shop/compose.yaml -p shop ps --services --status running',
      'compose -f /srv/shop/compose.yaml -p shop stop api worker cron',
      'compose -f /srv/shop/compose.yaml -p shop start api worker',
    ]);
  });

  it('without projectName there is no -p; with nothing running, start runs nothing', async () => {
    writeFileSync(join(dir, 'running'), 'db\n');
    const app = controller();
    const snapshot = await app.capture(signal);
    expect(snapshot).toEqual({ controller: 'compose', running: [] });
    await app.start(snapshot, signal);
    expect(argv()).toEqual(['compose -f /srv/shop/compose.yaml ps --services --status running']);
  });

  it('a failing docker compose reports exit code and stderr with a HINT', async () => {
    writeFileSync(join(dir, 'fail'), 'permission denied while trying to connect to the Docker daemon socket\n');
    await expect(controller().capture(signal)).rejects.toThrow(
      /could not list running services: docker failed \(exit code 17\): permission denied .*\nHINT: run `.*docker compose -f \/srv\/shop\/compose.yaml ps`/,
    );
  });

  it('a docker binary that is not installed is reported with an install HINT', async () => {
    await expect(controller({ docker: join(dir, 'no-such-docker') }).stop({ controller: 'compose', running: [] }, signal)).rejects.toThrow(
      /could not stop the services: cannot run .*no-such-docker\nHINT: install Docker with the compose plugin/,
    );
  });

  it('start refuses a snapshot taken by another controller', async () => {
    await expect(controller().start({ controller: 'kubernetes', targets: [] }, signal)).rejects.toThrow(/snapshot was taken by the kubernetes controller, not compose/);
    expect(argv()).toEqual([]);
  });
});
