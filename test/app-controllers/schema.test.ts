import { describe, expect, it } from 'vitest';
import { createAppController } from '../../app-controllers/registry.js';
import { AppConfig } from '../../app-controllers/schema.js';
import { fromZodError } from '../../config/errors.js';

/** The problems a config has, as `path: message` lines (what an operator reads). */
function problems(input: unknown): string[] {
  const parsed = AppConfig.safeParse(input);
  if (parsed.success) return [];
  return fromZodError(parsed.error, 'app config').problems.map((p) => `${p.path}: ${p.message}`);
}

describe('app controller config', () => {
  it('fills in the documented defaults for every controller type', () => {
    expect(AppConfig.parse({ type: 'none' })).toEqual({ type: 'none' });
    expect(AppConfig.parse({ type: 'kubernetes', targets: [{ kind: 'Deployment', name: 'backend' }] })).toEqual({
      type: 'kubernetes',
      targets: [{ kind: 'Deployment', name: 'backend', namespace: 'default' }],
      podGoneTimeoutSeconds: 300,
      readyTimeoutSeconds: 600,
    });
    expect(AppConfig.parse({ type: 'compose', file: 'compose.yaml', services: ['api'] })).toEqual({ type: 'compose', file: 'compose.yaml', services: ['api'], docker: 'docker' });
    expect(AppConfig.parse({ type: 'command', stop: 'systemctl stop app', start: 'systemctl start app', health: { url: 'http://127.0.0.1:8080/health' } })).toEqual({
      type: 'command',
      stop: 'systemctl stop app',
      start: 'systemctl start app',
      timeoutSeconds: 300,
      health: { url: 'http://127.0.0.1:8080/health', timeoutSeconds: 300, intervalSeconds: 2 },
    });
    expect(AppConfig.parse({ type: 'pgbouncer', database: 'app', passwordEnv: 'PGBOUNCER_PASSWORD' })).toEqual({
      type: 'pgbouncer',
      host: '127.0.0.1',
      port: 6432,
      user: 'pgbouncer',
      passwordEnv: 'PGBOUNCER_PASSWORD',
      database: 'app',
      disable: true,
      pauseTimeoutSeconds: 300,
    });
  });

  it('names the field and what was expected for a bad config', () => {
    expect(problems({ type: 'k8s' })).toEqual(['type: expected type none, kubernetes, compose, command or pgbouncer']);
    expect(problems({ type: 'kubernetes', targets: [] })).toEqual(['targets: expected at least one target']);
    expect(problems({ type: 'kubernetes', targets: [{ kind: 'Pod', name: '' }] })).toEqual([
      'targets[0].kind: expected kind Deployment or StatefulSet',
      'targets[0].name: expected the workload name, got an empty string',
    ]);
    expect(problems({ type: 'pgbouncer', port: '6432' })).toEqual(['port: expected a TCP port number, e.g. 6432', 'database: required: the pgbouncer database name to pause']);
    expect(problems({ type: 'command', stop: 'x', start: 'y', timeoutSeconds: -1, health: { url: 'localhost:8080' } })).toEqual([
      'timeoutSeconds: expected a positive number of seconds',
      'health.url: expected a full http(s) URL, e.g. http://app.internal:8080/health',
    ]);
    expect(problems({ type: 'compose', file: 'c.yaml', services: ['api'], password: 'x' })).toEqual([': unknown key "password"']);
  });

  it('refuses a password value where the name of an environment variable belongs', () => {
    expect(problems({ type: 'pgbouncer', database: 'app', passwordEnv: 's3cr3t pass!' })).toEqual([
      'passwordEnv: expected the name of an environment variable, e.g. PGBOUNCER_ADMIN_PASSWORD',
    ]);
  });

  it('the registry builds the controller of each type, describing its target without a secret', () => {
    const env = { PGBOUNCER_PASSWORD: 'never-shown-7a1f' };
    const configs = [
      { type: 'none' },
      { type: 'kubernetes', targets: [{ kind: 'StatefulSet', namespace: 'shop', name: 'api' }] },
      { type: 'compose', file: '/srv/compose.yaml', services: ['api', 'worker'] },
      { type: 'command', stop: 'x', start: 'y' },
      { type: 'pgbouncer', database: 'app', passwordEnv: 'PGBOUNCER_PASSWORD' },
    ].map((c) => AppConfig.parse(c));
    const controllers = configs.map((c) => createAppController(c, env));
    expect(controllers.map((c) => c.type)).toEqual(['none', 'kubernetes', 'compose', 'command', 'pgbouncer']);
    expect(controllers.map((c) => c.describe())).toEqual([
      'no application controller',
      'kubernetes statefulset/shop/api',
      'compose services api,worker (/srv/compose.yaml)',
      'command app controller',
      'pgbouncer 127.0.0.1:6432 database app',
    ]);
  });
});
