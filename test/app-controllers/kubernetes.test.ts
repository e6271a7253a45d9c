import { readFileSync, writeFileSync } from 'node:fs';
import { afterEach, describe, expect, it } from 'vitest';
import { createKubernetesController } from '../../app-controllers/kubernetes/controller.js';
import { KubernetesAppConfig } from '../../app-controllers/schema.js';
import type { AppController } from '../../app-controllers/types.js';
import { startKubernetesApi, type KubernetesApiDouble, type StartKubernetesApiOptions } from '../../stack/kubernetes-api.js';

// No Kubernetes can run here: the real @kubernetes/client-node talks to the in-repo double of the
// scale subresource (stack/kubernetes-api.ts), whose pods linger after a scale-down.
describe('kubernetes app controller', () => {
  let api: KubernetesApiDouble | undefined;
  const signal = new AbortController().signal;

  afterEach(async () => {
    await api?.stop();
    api = undefined;
  });

  async function setUp(options: StartKubernetesApiOptions = {}): Promise<KubernetesApiDouble> {
    api = await startKubernetesApi({
      workloads: [
        { kind: 'Deployment', name: 'backend', replicas: 3 },
        { kind: 'StatefulSet', namespace: 'jobs', name: 'worker', replicas: 2 },
      ],
      ...options,
    });
    return api;
  }

  function controller(double: KubernetesApiDouble, config: Record<string, unknown> = {}): AppController {
    return createKubernetesController(
      KubernetesAppConfig.parse({
        type: 'kubernetes',
        kubeconfig: double.kubeconfigPath,
        targets: [{ kind: 'Deployment', name: 'backend' }, { kind: 'StatefulSet', namespace: 'jobs', name: 'worker' }],
        ...config,
      }),
      { pollMs: 100 },
    );
  }

  it('capture remembers the replica count of every target without changing it', async () => {
    const double = await setUp();
    const snapshot = await controller(double).capture(signal);
    expect(snapshot).toEqual({
      controller: 'kubernetes',
      targets: [
        { kind: 'Deployment', namespace: 'default', name: 'backend', replicas: 3 },
        { kind: 'StatefulSet', namespace: 'jobs', name: 'worker', replicas: 2 },
      ],
    });
    expect(double.requests.map((r) => r.method)).toEqual(['GET', 'GET']);
    expect(double.replicas('Deployment', 'default', 'backend')).toEqual({ spec: 3, pods: 3, ready: 3 });
  });

  it('stop scales Deployments and StatefulSets to 0 through the scale subresource and returns only once their pods are gone', async () => {
    const double = await setUp({ podGoneDelayMs: 800 });
    const app = controller(double);
    const snapshot = await app.capture(signal);
    const started = Date.now();
    await app.stop(snapshot, signal);
    expect(Date.now() - started).toBeGreaterThanOrEqual(700);
    expect(double.replicas('Deployment', 'default', 'backend')).toEqual({ spec: 0, pods: 0, ready: 0 });
    expect(double.replicas('StatefulSet', 'jobs', 'worker')).toEqual({ spec: 0, pods: 0, ready: 0 });
    const puts = double.requests.filter((r) => r.method === 'PUT').map((r) => r.path);
    expect(puts).toEqual(['/apis/apps/v1/namespaces/default/deployments/backend/scale', '/apis/apps/v1/namespaces/jobs/statefulsets/worker/scale']);
    // It waited by listing the pods with the scale's selector, more than once.
    const podLists = double.requests.filter((r) => r.path === '/api/v1/namespaces/default/pods');
    expect(podLists.length).toBeGreaterThan(1);
    expect(decodeURIComponent(podLists[0]?.query ?? '')).toContain('labelSelector=app=backend');
  });

  it('start scales back to the captured replica counts and returns once they are ready', async () => {
    const double = await setUp({ podGoneDelayMs: 100, podReadyDelayMs: 600 });
    const app = controller(double);
    const snapshot = await app.capture(signal);
    await app.stop(snapshot, signal);
    const started = Date.now();
    await app.start(snapshot, signal);
    expect(Date.now() - started).toBeGreaterThanOrEqual(500);
    expect(double.replicas('Deployment', 'default', 'backend')).toEqual({ spec: 3, pods: 3, ready: 3 });
    expect(double.replicas('StatefulSet', 'jobs', 'worker')).toEqual({ spec: 2, pods: 2, ready: 2 });
  });

  it('stop and start are idempotent: a second run changes nothing', async () => {
    const double = await setUp({ podGoneDelayMs: 100, podReadyDelayMs: 100 });
    const app = controller(double);
    const snapshot = await app.capture(signal);
    await app.stop(snapshot, signal);
    const before = double.requests.length;
    await app.stop(snapshot, signal);
    expect(double.requests.slice(before).filter((r) => r.method !== 'GET')).toEqual([]);
    await app.start(snapshot, signal);
    const afterStart = double.requests.length;
    await app.start(snapshot, signal);
    expect(double.requests.slice(afterStart).filter((r) => r.method !== 'GET')).toEqual([]);
    expect(double.replicas('Deployment', 'default', 'backend').spec).toBe(3);
  });

  it('a deployment that does not exist fails with an error naming it, the 404 and a HINT', async () => {
    const double = await setUp();
    const app = controller(double, { targets: [{ kind: 'Deployment', namespace: 'shop', name: 'ghost' }] });
    await expect(app.capture(signal)).rejects.toThrow(
      /^kubernetes deployment\/shop\/ghost: reading the scale failed: HTTP 404: deployments\.apps "ghost" not found\nHINT: check kind, name and namespace/,
    );
  });

  it('a namespace the worker may not touch fails with an RBAC HINT and never shows the token', async () => {
    const double = await setUp({ forbiddenNamespaces: ['jobs'] });
    const app = controller(double);
    const error = await app.capture(signal).then(() => undefined, (e: Error) => e);
    expect(error?.message).toMatch(/^kubernetes statefulset\/jobs\/worker: reading the scale failed: HTTP 403: .*forbidden.*\nHINT: RBAC: .*statefulsets\/scale/s);
    expect(error?.message).not.toContain(double.token);
  });

  it('stop fails with the names of the pods that outlive podGoneTimeoutSeconds', async () => {
    const double = await setUp({ podGoneDelayMs: 60_000 });
    const app = controller(double, { targets: [{ kind: 'StatefulSet', namespace: 'jobs', name: 'worker' }], podGoneTimeoutSeconds: 1 });
    const snapshot = await app.capture(signal);
    await expect(app.stop(snapshot, signal)).rejects.toThrow(/scaled to 0 but 2 pod\(s\) still exist after 1s: worker-0, worker-1\nHINT: .*terminationGracePeriodSeconds/);
  });

  it('a wrong token is reported as rejected credentials', async () => {
    const double = await setUp();
    const other = await startKubernetesApi({ workloads: [{ kind: 'Deployment', name: 'backend', replicas: 1 }] });
    try {
      // The other server's kubeconfig carries its own token, which this server does not accept.
      writeFileSync(other.kubeconfigPath, readFileSync(other.kubeconfigPath, 'utf8').replace(other.url, double.url));
      const app = controller(double, { kubeconfig: other.kubeconfigPath, targets: [{ kind: 'Deployment', name: 'backend' }] });
      await expect(app.capture(signal)).rejects.toThrow(/HTTP 401: Unauthorized\nHINT: the credentials in the kubeconfig were rejected/);
    } finally {
      await other.stop();
    }
  });

  it('a kubeconfig context that does not exist is refused with a HINT', async () => {
    const double = await setUp();
    const app = controller(double, { context: 'production' });
    await expect(app.capture(signal)).rejects.toThrow(/cannot load the kubeconfig .*production.*\nHINT: /s);
  });
});
