import { execFile } from 'node:child_process';
import { cpSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { beforeAll, describe, expect, it } from 'vitest';
import { parse } from 'yaml';
import { createKubernetesController } from '../../app-controllers/kubernetes/controller.js';
import { loadConfig, parseConfig } from '../../config/load.js';
import { SHUTDOWN_FORCE_MARGIN_SECONDS, type Config } from '../../config/schema.js';
import { projectRoot } from '../../stack/binaries.js';
import { startKubernetesApi } from '../../stack/kubernetes-api.js';

// The deployment artifacts (docker-compose.yml, Dockerfile, deploy/kubernetes) cannot run here: no
// Docker engine, no cluster. scripts/check-deploy.sh runs the best offline validators (compose-go's
// compose-spec loader, hadolint, kubeconform with the Kubernetes and Prometheus Operator schemas,
// promtool); these tests run it, show that each validator rejects a broken copy, and check what
// the artifacts must agree on with pgrunbook itself (its config loader, its RBAC needs).

const run = promisify(execFile);
const tools = join(projectRoot, '.tools', 'deploy');
const deployCheck = join(tools, 'bin', 'deploy-check');
const K8S_VERSION = '1.37.0';
const PROMETHEUS_OPERATOR_VERSION = 'v0.85.0';

interface Outcome {
  code: number;
  output: string;
}

async function outcome(file: string, args: string[], cwd = projectRoot): Promise<Outcome> {
  try {
    const { stdout, stderr } = await run(file, args, { cwd, maxBuffer: 16 * 1024 * 1024 });
    return { code: 0, output: stdout + stderr };
  } catch (error) {
    const e = error as { code?: number; stdout?: string; stderr?: string };
    return { code: typeof e.code === 'number' ? e.code : -1, output: `${e.stdout ?? ''}${e.stderr ?? ''}` };
  }
}

const readYaml = <T>(path: string): T => parse(readFileSync(join(projectRoot, path), 'utf8')) as T;
const readDocs = (path: string): Record<string, unknown>[] =>
  readFileSync(join(projectRoot, path), 'utf8')
    .split(/^---$/m)
    .map((doc) => parse(doc) as Record<string, unknown>)
    .filter(Boolean);

/** A scratch copy of the deployment artifacts, to break one thing in. */
function scratchCopy(): string {
  const dir = mkdtempSync(join(tmpdir(), 'pgrunbook-deploy-'));
  for (const path of ['docker-compose.yml', '.env.example', 'Dockerfile', '.dockerignore', 'deploy', 'package.json', 'package-lock.json', 'tsconfig.json', 'tsconfig.build.json', 'scripts/node.sh']) {
    cpSync(join(projectRoot, path), join(dir, path), { recursive: true });
  }
  for (const folder of (readYaml<{ include: string[] }>('tsconfig.build.json').include)) cpSync(join(projectRoot, folder), join(dir, folder), { recursive: true });
  return dir;
}

function edit(dir: string, path: string, from: string | RegExp, to: string): void {
  const text = readFileSync(join(dir, path), 'utf8');
  const changed = text.replace(from, to);
  expect(changed, `${path} contains ${String(from)}`).not.toBe(text);
  writeFileSync(join(dir, path), changed);
}

type ComposeService = {
  image?: string;
  environment?: Record<string, string>;
  stop_grace_period?: string;
  healthcheck?: { test: string[] };
  ports?: string[];
};
const compose = readYaml<{ services: Record<string, ComposeService> }>('docker-compose.yml');
const k8s = {
  configMap: readYaml<{ data: Record<string, string> }>('deploy/kubernetes/configmap.yaml'),
  deployment: readYaml<{
    spec: { template: { spec: { terminationGracePeriodSeconds: number; containers: { env: { name: string; valueFrom?: { secretKeyRef?: { name: string } } }[]; ports: { name: string; containerPort: number }[]; securityContext: Record<string, unknown> }[]; securityContext: Record<string, unknown> } } };
  }>('deploy/kubernetes/deployment.yaml'),
  rbac: readDocs('deploy/kubernetes/app-scaling-rbac.yaml'),
};

/** Environment variables a config reads: ${VAR}s in its URLs and the *Env fields. */
function environmentNames(configText: string, config: Config): string[] {
  const withoutComments = configText.split('\n').filter((line) => !line.trim().startsWith('#')).join('\n');
  const names = new Set<string>([...withoutComments.matchAll(/\$\{([A-Za-z_][A-Za-z0-9_]*)\}/g)].map((m) => m[1]!));
  for (const repository of Object.values(config.repositories)) {
    if (repository.type === 's3') names.add(repository.accessKeyIdEnv).add(repository.secretAccessKeyEnv);
  }
  return [...names].sort();
}

describe('deployment artifacts', () => {
  beforeAll(async () => {
    // Installs kubeconform, hadolint, the schemas and builds scripts/deploy-check into .tools/deploy once.
    const install = await outcome('bash', ['scripts/check-deploy.sh', '--install']);
    expect(install.code, install.output).toBe(0);
  }, 600_000);

  it('scripts/check-deploy.sh passes: compose-spec, hadolint, kubeconform, the PrometheusRule and promtool', async () => {
    const result = await outcome('bash', ['scripts/check-deploy.sh']);
    expect(result.code, result.output).toBe(0);
    expect(result.output).not.toContain('FAILED');
    for (const line of ['ok: docker-compose.yml', 'ok: Dockerfile (COPY', 'ok: Dockerfile (hadolint', 'ok: PrometheusRule groups', 'ok: PrometheusRule spec (promtool']) {
      expect(result.output).toContain(line);
    }
    // Every manifest was validated against a schema, none skipped for want of one.
    expect(result.output).toMatch(/Kubernetes 1\.30\.0[\s\S]*Kubernetes 1\.37\.0/);
    // Only the Kustomization (no schema: not an API object) is skipped.
    expect(result.output.match(/Summary: \d+ resources found in \d+ files - Valid: [1-9]\d*, Invalid: 0, Errors: 0, Skipped: 1\n/g)).toHaveLength(2);
  });

  describe('each validator rejects a broken copy', () => {
    it('compose: a variable missing from .env.example, a short depends_on, a service without healthcheck, a key the compose-spec does not know', async () => {
      const dir = scratchCopy();
      try {
        edit(dir, 'docker-compose.yml', '${TEMPORAL_UI_PORT}', '${TEMPORAL_UI_PUBLISHED_PORT}');
        edit(dir, 'docker-compose.yml', /( {2}pgrunbook-schedules:\n[\s\S]*?)depends_on:\n {6}pgrunbook-worker:\n {8}condition: service_healthy/, '$1depends_on: [pgrunbook-worker]');
        edit(dir, 'docker-compose.yml', /( {2}temporal-ui:[\s\S]*?)\n {4}healthcheck:\n(?: {6}.*\n)+/, '$1\n');
        let result = await outcome(deployCheck, ['compose', '--project-dir', dir, '--env-file', join(dir, '.env.example')]);
        expect(result.code, result.output).toBe(1);
        expect(result.output).toContain('TEMPORAL_UI_PUBLISHED_PORT is used by docker-compose.yml but not listed');
        expect(result.output).toContain('service pgrunbook-schedules: depends_on must be the long form');
        expect(result.output).toContain('service temporal-ui: long-running service without a healthcheck');

        edit(dir, 'docker-compose.yml', '    stop_grace_period: 50s', '    stop_grace_period: 50s\n    stop_grace_seconds: 50');
        result = await outcome(deployCheck, ['compose', '--project-dir', dir, '--env-file', join(dir, '.env.example')]);
        expect(result.code, result.output).toBe(1);
        expect(result.output).toMatch(/compose-spec: .*stop_grace_seconds/);
      } finally {
        rmSync(dir, { recursive: true, force: true });
      }
    });

    it('compose: a healthcheck command its image does not have, an anonymous volume, a missing bind-mount source', async () => {
      const dir = scratchCopy();
      try {
        edit(dir, 'docker-compose.yml', 'test: ["CMD", "nc", "-z", "localhost", "7233"]', 'test: ["CMD", "curl", "-f", "http://localhost:7233"]');
        edit(dir, 'docker-compose.yml', '      - seaweedfs-data:/data\n', '      - /data\n');
        rmSync(join(dir, 'deploy/compose/target-init.sql'));
        const result = await outcome(deployCheck, ['compose', '--project-dir', dir, '--env-file', join(dir, '.env.example')]);
        expect(result.code, result.output).toBe(1);
        expect(result.output).toContain('service temporal: healthcheck runs "curl", which image temporalio/server does not have');
        expect(result.output).toContain('service seaweedfs: anonymous volume at /data');
        expect(result.output).toMatch(/service target-postgresql: bind mount source .*target-init\.sql does not exist/);
      } finally {
        rmSync(dir, { recursive: true, force: true });
      }
    });

    it('Dockerfile: a COPY source that is not in the build context, or that .dockerignore drops; a root final stage; hadolint findings', async () => {
      const dir = scratchCopy();
      try {
        edit(dir, 'Dockerfile', 'COPY workflows ./workflows', 'COPY workflows ./workflows\nCOPY docs ./docs');
        edit(dir, '.dockerignore', 'dist\n', 'dist\nscripts\n');
        edit(dir, 'Dockerfile', 'USER 10001:10001\n', '');
        const result = await outcome(deployCheck, ['dockerfile', '--context', dir]);
        expect(result.code, result.output).toBe(1);
        expect(result.output).toContain('COPY source docs does not exist in the build context');
        expect(result.output).toContain('COPY source scripts/node.sh is excluded by .dockerignore');
        expect(result.output).toContain('the final stage runs as root');

        edit(dir, 'Dockerfile', '# hadolint ignore=DL3008\n', '');
        const lint = await outcome(join(tools, 'py', 'bin', 'hadolint'), ['--failure-threshold', 'style', join(dir, 'Dockerfile')]);
        expect(lint.code, lint.output).toBe(1);
        expect(lint.output).toContain('DL3008');
      } finally {
        rmSync(dir, { recursive: true, force: true });
      }
    });

    it('kubeconform: a misspelt Deployment field, a PodMonitor field the CRD does not have, a non-duration "for" in the PrometheusRule', async () => {
      const dir = scratchCopy();
      try {
        edit(dir, 'deploy/kubernetes/deployment.yaml', 'terminationGracePeriodSeconds: 60', 'terminationGracePeriod: 60');
        edit(dir, 'deploy/kubernetes/podmonitor.yaml', 'podMetricsEndpoints:', 'podMetricEndpoints:');
        edit(dir, 'deploy/kubernetes/prometheusrule.yaml', 'for: 1h', 'for: 1');
        const schemas = join(tools, 'schemas', PROMETHEUS_OPERATOR_VERSION, `v${K8S_VERSION}`, '{{ .ResourceKind }}{{ .KindSuffix }}.json');
        const result = await outcome(join(tools, 'bin', 'kubeconform'), ['-strict', '-summary', '-skip', 'Kustomization', '-schema-location', schemas, join(dir, 'deploy/kubernetes')]);
        expect(result.code, result.output).toBe(1);
        expect(result.output).toMatch(/Deployment pgrunbook-worker is invalid.*terminationGracePeriod/);
        expect(result.output).toMatch(/PodMonitor pgrunbook-worker is invalid.*podMetricEndpoints/);
        expect(result.output).toMatch(/PrometheusRule pgrunbook is invalid.*\/for': got number, want string/);
        expect(result.output).toContain('Invalid: 3');
      } finally {
        rmSync(dir, { recursive: true, force: true });
      }
    });

    it('PrometheusRule: groups that drifted from deploy/prometheus/pgrunbook-alerts.yml are refused, and promtool refuses a bad expression', async () => {
      const dir = scratchCopy();
      try {
        const rules = join(dir, 'rules.yml');
        edit(dir, 'deploy/kubernetes/prometheusrule.yaml', 'severity: critical', 'severity: page');
        const drift = await outcome(deployCheck, ['promrule', '--rule', join(dir, 'deploy/kubernetes/prometheusrule.yaml'), '--alerts', join(dir, 'deploy/prometheus/pgrunbook-alerts.yml'), '--out', rules]);
        expect(drift.code, drift.output).toBe(1);
        expect(drift.output).toContain('spec.groups differ from');

        edit(dir, 'deploy/kubernetes/prometheusrule.yaml', 'absent(postgresql_backup_last_success_timestamp)', 'absent(postgresql_backup_last_success_timestamp');
        await outcome(deployCheck, ['promrule', '--rule', join(dir, 'deploy/kubernetes/prometheusrule.yaml'), '--alerts', join(dir, 'deploy/prometheus/pgrunbook-alerts.yml'), '--out', rules]);
        const check = await outcome('promtool', ['check', 'rules', rules]);
        expect(check.code, check.output).toBe(1);
        expect(check.output).toMatch(/unclosed left parenthesis|parse error/);
      } finally {
        rmSync(dir, { recursive: true, force: true });
      }
    });
  });

  describe('the configs the artifacts ship are valid pgrunbook configs', () => {
    it('deploy/compose/pgrunbook.yaml loads, and the worker service sets every variable it reads', () => {
      const { config } = loadConfig(join(projectRoot, 'deploy/compose/pgrunbook.yaml'));
      expect(config.metrics).toMatchObject({ enabled: true, host: '0.0.0.0', port: 9464 });
      expect(config.worker.taskQueues).toEqual([config.temporal.taskQueue]);
      expect(config.temporal.address).toBe('temporal:7233');
      const worker = compose.services['pgrunbook-worker']!;
      const names = environmentNames(readFileSync(join(projectRoot, 'deploy/compose/pgrunbook.yaml'), 'utf8'), config);
      expect(names).toEqual(['AWS_ACCESS_KEY_ID', 'AWS_SECRET_ACCESS_KEY', 'TARGET_DB_PASSWORD']);
      for (const name of names) expect(Object.keys(worker.environment ?? {})).toContain(name);
      // docker stop waits longer than the worker's grace time (and its force margin) before it kills.
      expect(Number.parseInt(worker.stop_grace_period ?? '10s', 10)).toBeGreaterThan(config.worker.shutdownGraceSeconds + SHUTDOWN_FORCE_MARGIN_SECONDS);
      expect(worker.ports).toEqual(['127.0.0.1:${PGRUNBOOK_METRICS_PORT}:9464']);
      expect(worker.healthcheck?.test.join(' ')).toContain(`http://127.0.0.1:${config.metrics.port}/healthz`);
    });

    it('the ConfigMap holds a pgrunbook.yaml that loads; the Deployment gives the worker its grace time and every variable from a Secret', () => {
      const text = k8s.configMap.data['pgrunbook.yaml']!;
      const config = parseConfig(text, 'configmap.yaml');
      expect(config.worker).toMatchObject({ taskQueues: ['pgrunbook'], shutdownGraceSeconds: 40, maxConcurrentDumps: 2 });
      expect(config.fleets.nightly?.schedule?.calendar).toMatchObject({ hour: 2, minute: 0 });
      expect(config.databases.shop?.labels).toEqual({ tier: 'prod', team: 'shop' });
      const pod = k8s.deployment.spec.template.spec;
      expect(pod.terminationGracePeriodSeconds).toBeGreaterThan(config.worker.shutdownGraceSeconds + SHUTDOWN_FORCE_MARGIN_SECONDS);
      const container = pod.containers[0]!;
      const fromSecrets = container.env.filter((e) => e.valueFrom?.secretKeyRef?.name === 'pgrunbook-credentials').map((e) => e.name).sort();
      expect(fromSecrets).toEqual(environmentNames(text, config));
      expect(container.ports).toEqual([{ name: 'metrics', containerPort: config.metrics.port, protocol: 'TCP' }]);
      expect(config.metrics.host).toBe('0.0.0.0');
      expect(pod.securityContext).toMatchObject({ runAsNonRoot: true, runAsUser: 10001 });
      expect(container.securityContext).toMatchObject({ readOnlyRootFilesystem: true, allowPrivilegeEscalation: false, capabilities: { drop: ['ALL'] } });
    });

    it('the Dockerfile copies every folder that `npm run build` compiles (tsconfig.build.json)', () => {
      const dockerfile = readFileSync(join(projectRoot, 'Dockerfile'), 'utf8');
      const copied = [...dockerfile.matchAll(/^COPY ([a-z-]+) \.\/\1$/gm)].map((m) => m[1]!).sort();
      expect(copied).toEqual([...readYaml<{ include: string[] }>('tsconfig.build.json').include].sort());
    });
  });

  it('the Role grants exactly what the kubernetes app controller calls on capture, stop and start of the ConfigMap\'s targets', async () => {
    const config = parseConfig(k8s.configMap.data['pgrunbook.yaml']!, 'configmap.yaml');
    const app = config.databases.shop!.app;
    if (app.type !== 'kubernetes') throw new Error('the ConfigMap\'s shop database has no kubernetes app');
    const api = await startKubernetesApi({
      workloads: app.targets.map((t) => ({ kind: t.kind, namespace: t.namespace, name: t.name, replicas: 2 })),
      podGoneDelayMs: 100,
      podReadyDelayMs: 50,
    });
    try {
      const controller = createKubernetesController({ ...app, kubeconfig: api.kubeconfigPath }, { pollMs: 50 });
      const signal = new AbortController().signal;
      const snapshot = await controller.capture(signal);
      await controller.stop(snapshot, signal);
      await controller.start(snapshot, signal);
      expect(api.replicas('Deployment', 'shop', 'shop-api')).toEqual({ spec: 2, pods: 2, ready: 2 });

      // Each request as RBAC sees it: verb, resource[/subresource], name, namespace.
      const asked = new Set<string>();
      for (const r of api.requests) {
        const workload = /^\/apis\/apps\/v1\/namespaces\/([^/]+)\/(deployments|statefulsets)\/([^/]+)(\/scale)?$/.exec(r.path);
        const pods = /^\/api\/v1\/namespaces\/([^/]+)\/pods$/.exec(r.path);
        const verb = r.method === 'GET' ? (pods ? 'list' : 'get') : r.method === 'PUT' ? 'update' : r.method === 'PATCH' ? 'patch' : r.method;
        if (workload) asked.add(`${workload[1]} apps ${workload[2]}${workload[4] ?? ''} ${workload[3]} ${verb}`);
        else if (pods) asked.add(`${pods[1]}  pods * ${verb}`);
        else throw new Error(`unexpected request ${r.method} ${r.path}`);
      }
      const role = k8s.rbac.find((d) => d.kind === 'Role') as { metadata: { namespace: string }; rules: { apiGroups: string[]; resources: string[]; resourceNames?: string[]; verbs: string[] }[] };
      const granted = new Set<string>();
      for (const rule of role.rules) {
        for (const group of rule.apiGroups) for (const resource of rule.resources) for (const name of rule.resourceNames ?? ['*']) for (const verb of rule.verbs) granted.add(`${role.metadata.namespace} ${group} ${resource} ${name} ${verb}`);
      }
      expect([...asked].sort()).toEqual([...granted].sort());
      const binding = k8s.rbac.find((d) => d.kind === 'RoleBinding') as { metadata: { namespace: string }; subjects: { kind: string; name: string; namespace: string }[] };
      expect(binding.metadata.namespace).toBe(role.metadata.namespace);
      expect(binding.subjects).toEqual([{ kind: 'ServiceAccount', name: 'pgrunbook-worker', namespace: 'pgrunbook' }]);
    } finally {
      await api.stop();
    }
  });
});
