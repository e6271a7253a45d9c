import { randomBytes, randomUUID } from 'node:crypto';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { registerSecret } from '../process/secrets.js';

/**
 * An in-repo HTTP double of the part of the Kubernetes API that scaling an application uses: the
 * scale subresource of Deployments and StatefulSets (GET, PUT with resourceVersion conflicts,
 * merge and JSON PATCH), the workloads themselves (GET, with status.readyReplicas), and listing pods
 * by label selector. No Kubernetes can run here; the real @kubernetes/client-node talks to this.
 *
 * Pods follow the replica count the way a cluster's controllers make them: a scale-up creates pods
 * that turn ready after `podReadyDelayMs`; a scale-down marks pods terminating (deletionTimestamp)
 * and they disappear only after `podGoneDelayMs`, so "wait until the pods are gone" is exercised.
 * Requests need `Authorization: Bearer <token>`; unknown workloads get a 404 Status object.
 */
export type WorkloadKind = 'Deployment' | 'StatefulSet';

export interface KubernetesApiDouble {
  /** http://127.0.0.1:PORT */
  readonly url: string;
  /** A kubeconfig (context `double`) pointing at this server with its bearer token. */
  readonly kubeconfigPath: string;
  readonly token: string;
  /** Creates the workload if needed and sets its replica count (as `kubectl scale` would). */
  setReplicas(kind: WorkloadKind, namespace: string, name: string, replicas: number): void;
  /** The workload's state: spec.replicas, pods that still exist (terminating included), ready pods. */
  replicas(kind: WorkloadKind, namespace: string, name: string): { spec: number; pods: number; ready: number };
  /** Every request served, oldest first. */
  readonly requests: { method: string; path: string; query: string; status: number }[];
  stop(): Promise<void>;
}

export interface StartKubernetesApiOptions {
  workloads?: { kind: WorkloadKind; namespace?: string; name: string; replicas: number }[];
  /** How long a pod stays (terminating) after a scale-down. Default 500 ms. */
  podGoneDelayMs?: number;
  /** How long a new pod takes to turn ready. Default 200 ms. */
  podReadyDelayMs?: number;
  /** Namespaces whose requests are refused with 403, as RBAC would. */
  forbiddenNamespaces?: string[];
}

interface Pod {
  name: string;
  createdAt: number;
  readyAt: number;
  terminatingSince?: number;
}

interface Workload {
  kind: WorkloadKind;
  namespace: string;
  name: string;
  uid: string;
  replicas: number;
  resourceVersion: number;
  generation: number;
  createdAt: string;
  pods: Pod[];
  nextOrdinal: number;
}

const RESOURCES: Record<string, WorkloadKind> = { deployments: 'Deployment', statefulsets: 'StatefulSet' };

export async function startKubernetesApi(options: StartKubernetesApiOptions = {}): Promise<KubernetesApiDouble> {
  const podGoneDelayMs = options.podGoneDelayMs ?? 500;
  const podReadyDelayMs = options.podReadyDelayMs ?? 200;
  const forbidden = new Set(options.forbiddenNamespaces ?? []);
  const token = randomBytes(24).toString('base64url');
  registerSecret(token);
  const workloads = new Map<string, Workload>();
  const requests: KubernetesApiDouble['requests'] = [];
  let clock = 1000; // resourceVersion source, shared by every object like etcd's revision

  const key = (kind: WorkloadKind, namespace: string, name: string): string => `${kind}/${namespace}/${name}`;
  const labelsOf = (w: Workload): Record<string, string> => ({ app: w.name, 'pgrunbook.test/kind': w.kind.toLowerCase() });

  /** Drops pods whose termination is over. Time-based, so no timers outlive the server. */
  function settle(w: Workload): void {
    const now = Date.now();
    w.pods = w.pods.filter((p) => p.terminatingSince === undefined || now < p.terminatingSince + podGoneDelayMs);
  }

  function reconcile(w: Workload): void {
    settle(w);
    const now = Date.now();
    const live = w.pods.filter((p) => p.terminatingSince === undefined);
    if (live.length > w.replicas) {
      // StatefulSets remove the highest ordinals first; for Deployments any order will do.
      for (const pod of live.slice(w.replicas)) pod.terminatingSince = now;
    }
    for (let i = live.length; i < w.replicas; i++) {
      const name = w.kind === 'StatefulSet' ? `${w.name}-${w.nextOrdinal++}` : `${w.name}-${randomBytes(3).toString('hex')}`;
      w.pods.push({ name, createdAt: now, readyAt: now + podReadyDelayMs });
    }
  }

  function ensure(kind: WorkloadKind, namespace: string, name: string): Workload {
    const k = key(kind, namespace, name);
    let w = workloads.get(k);
    if (!w) {
      w = { kind, namespace, name, uid: randomUUID(), replicas: 0, resourceVersion: ++clock, generation: 1, createdAt: new Date().toISOString(), pods: [], nextOrdinal: 0 };
      workloads.set(k, w);
    }
    return w;
  }

  function setReplicas(kind: WorkloadKind, namespace: string, name: string, replicas: number): void {
    const w = ensure(kind, namespace, name);
    if (w.replicas !== replicas) {
      w.replicas = replicas;
      w.resourceVersion = ++clock;
      w.generation++;
    }
    reconcile(w);
    // StatefulSets count pods from ordinal 0 again once all are gone.
    if (w.kind === 'StatefulSet' && w.pods.length === 0) w.nextOrdinal = 0;
  }

  for (const w of options.workloads ?? []) {
    setReplicas(w.kind, w.namespace ?? 'default', w.name, w.replicas);
    // Start from a steady state: the initial pods are ready at once.
    for (const pod of ensure(w.kind, w.namespace ?? 'default', w.name).pods) pod.readyAt = 0;
  }

  const stateOf = (w: Workload): { live: Pod[]; ready: number } => {
    settle(w);
    const live = w.pods.filter((p) => p.terminatingSince === undefined);
    return { live, ready: live.filter((p) => p.readyAt <= Date.now()).length };
  };

  const metadata = (w: Workload): Record<string, unknown> => ({
    name: w.name,
    namespace: w.namespace,
    uid: w.uid,
    resourceVersion: String(w.resourceVersion),
    generation: w.generation,
    creationTimestamp: w.createdAt,
  });

  const scaleOf = (w: Workload): Record<string, unknown> => ({
    kind: 'Scale',
    apiVersion: 'autoscaling/v1',
    metadata: metadata(w),
    spec: { replicas: w.replicas },
    status: { replicas: stateOf(w).live.length, selector: Object.entries(labelsOf(w)).map(([k, v]) => `${k}=${v}`).join(',') },
  });

  const workloadOf = (w: Workload): Record<string, unknown> => {
    const { live, ready } = stateOf(w);
    return {
      kind: w.kind,
      apiVersion: 'apps/v1',
      metadata: metadata(w),
      spec: {
        replicas: w.replicas,
        selector: { matchLabels: labelsOf(w) },
        ...(w.kind === 'StatefulSet' ? { serviceName: w.name } : {}),
        template: { metadata: { labels: labelsOf(w) }, spec: { containers: [{ name: 'app', image: 'example.invalid/app:1' }] } },
      },
      status: { observedGeneration: w.generation, replicas: live.length, readyReplicas: ready, availableReplicas: ready, updatedReplicas: live.length },
    };
  };

  const podOf = (w: Workload, pod: Pod): Record<string, unknown> => ({
    kind: 'Pod',
    apiVersion: 'v1',
    metadata: {
      name: pod.name,
      namespace: w.namespace,
      labels: labelsOf(w),
      creationTimestamp: new Date(pod.createdAt).toISOString(),
      ...(pod.terminatingSince !== undefined ? { deletionTimestamp: new Date(pod.terminatingSince).toISOString(), deletionGracePeriodSeconds: Math.ceil(podGoneDelayMs / 1000) } : {}),
    },
    spec: { containers: [{ name: 'app', image: 'example.invalid/app:1' }] },
    status: { phase: 'Running', conditions: [{ type: 'Ready', status: pod.readyAt <= Date.now() && pod.terminatingSince === undefined ? 'True' : 'False' }] },
  });

  function status(res: ServerResponse, code: number, reason: string, message: string, details?: Record<string, unknown>): void {
    send(res, code, { kind: 'Status', apiVersion: 'v1', metadata: {}, status: 'Failure', message, reason, ...(details ? { details } : {}), code });
  }

  function send(res: ServerResponse, code: number, body: unknown): void {
    res.writeHead(code, { 'content-type': 'application/json' });
    res.end(JSON.stringify(body));
  }

  async function readBody(req: IncomingMessage): Promise<unknown> {
    const chunks: Buffer[] = [];
    for await (const chunk of req) chunks.push(chunk as Buffer);
    const text = Buffer.concat(chunks).toString('utf8');
    return text ? JSON.parse(text) : undefined;
  }

  /** Equality-based selectors only (`a=b,c==d`), which is what workloads' matchLabels produce. */
  function matches(selector: string, labels: Record<string, string>): boolean {
    return selector
      .split(',')
      .filter(Boolean)
      .every((term) => {
        const [k, v] = term.split(/==?/);
        return k !== undefined && labels[k.trim()] === v?.trim();
      });
  }

  async function handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const url = new URL(req.url ?? '/', 'http://double');
    const method = req.method ?? 'GET';
    if (req.headers.authorization !== `Bearer ${token}`) {
      status(res, 401, 'Unauthorized', 'Unauthorized');
      return;
    }
    const workloadPath = /^\/apis\/apps\/v1\/namespaces\/([^/]+)\/(deployments|statefulsets)\/([^/]+)(\/scale)?$/.exec(url.pathname);
    const podsPath = /^\/api\/v1\/namespaces\/([^/]+)\/pods$/.exec(url.pathname);
    const namespace = decodeURIComponent(workloadPath?.[1] ?? podsPath?.[1] ?? '');
    if (forbidden.has(namespace)) {
      const resource = workloadPath ? `${workloadPath[2]}${workloadPath[4] ? '/scale' : ''}` : 'pods';
      status(res, 403, 'Forbidden', `${resource} is forbidden: User "system:serviceaccount:pgrunbook:worker" cannot ${method.toLowerCase()} resource "${resource}" in API group "${workloadPath ? 'apps' : ''}" in the namespace "${namespace}"`);
      return;
    }

    if (podsPath && method === 'GET') {
      const selector = url.searchParams.get('labelSelector') ?? '';
      const items = [...workloads.values()]
        .filter((w) => w.namespace === namespace)
        .flatMap((w) => {
          settle(w);
          return matches(selector, labelsOf(w)) ? w.pods.map((p) => podOf(w, p)) : [];
        });
      send(res, 200, { kind: 'PodList', apiVersion: 'v1', metadata: { resourceVersion: String(clock) }, items });
      return;
    }

    if (workloadPath) {
      const resource = workloadPath[2] ?? '';
      const kind = RESOURCES[resource] as WorkloadKind;
      const name = decodeURIComponent(workloadPath[3] ?? '');
      const isScale = workloadPath[4] !== undefined;
      const w = workloads.get(key(kind, namespace, name));
      if (!w) {
        status(res, 404, 'NotFound', `${resource}.apps "${name}" not found`, { name, group: 'apps', kind: resource });
        return;
      }
      if (method === 'GET') {
        send(res, 200, isScale ? scaleOf(w) : workloadOf(w));
        return;
      }
      if (isScale && (method === 'PUT' || method === 'PATCH')) {
        const body = await readBody(req);
        let replicas: unknown;
        if (method === 'PUT') {
          const scale = body as { metadata?: { resourceVersion?: string }; spec?: { replicas?: unknown } } | undefined;
          const expected = scale?.metadata?.resourceVersion;
          if (expected && expected !== String(w.resourceVersion)) {
            status(res, 409, 'Conflict', `Operation cannot be fulfilled on ${resource}.apps "${name}": the object has been modified; please apply your changes to the latest version and try again`);
            return;
          }
          replicas = scale?.spec?.replicas;
        } else if (Array.isArray(body)) {
          replicas = (body as { op?: string; path?: string; value?: unknown }[]).find((op) => (op.op === 'replace' || op.op === 'add') && op.path === '/spec/replicas')?.value;
        } else {
          replicas = (body as { spec?: { replicas?: unknown } } | undefined)?.spec?.replicas;
        }
        if (typeof replicas !== 'number' || !Number.isInteger(replicas) || replicas < 0) {
          status(res, 422, 'Invalid', `Scale.autoscaling "${name}" is invalid: spec.replicas: Invalid value: must be greater than or equal to 0`);
          return;
        }
        setReplicas(kind, namespace, name, replicas);
        send(res, 200, scaleOf(w));
        return;
      }
      status(res, 405, 'MethodNotAllowed', `the server does not allow this method on the requested resource`);
      return;
    }
    status(res, 404, 'NotFound', 'the server could not find the requested resource');
  }

  const server = createServer((req, res) => {
    const url = new URL(req.url ?? '/', 'http://double');
    res.on('finish', () => requests.push({ method: req.method ?? 'GET', path: url.pathname, query: url.search, status: res.statusCode }));
    handle(req, res).catch((error: unknown) => {
      if (!res.headersSent) status(res, 500, 'InternalError', (error as Error).message);
      else res.destroy();
    });
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => resolve());
  });
  const address = server.address();
  const port = typeof address === 'object' && address ? address.port : 0;
  const url = `http://127.0.0.1:${port}`;

  const dir = mkdtempSync(join(tmpdir(), 'pgrunbook-k8s-'));
  const kubeconfigPath = join(dir, 'kubeconfig');
  // JSON is YAML: the client library reads this like any kubeconfig. It refuses a plain-http server
  // unless TLS verification is off, which is all this flag means for a server without TLS.
  const kubeconfig = {
    apiVersion: 'v1',
    kind: 'Config',
    clusters: [{ name: 'double', cluster: { server: url, 'insecure-skip-tls-verify': true } }],
    users: [{ name: 'double', user: { token } }],
    contexts: [{ name: 'double', context: { cluster: 'double', user: 'double', namespace: 'default' } }],
    'current-context': 'double',
  };
  writeFileSync(kubeconfigPath, JSON.stringify(kubeconfig, null, 2), { mode: 0o600 });

  let stopped = false;
  return {
    url,
    kubeconfigPath,
    token,
    setReplicas,
    replicas: (kind, namespace, name) => {
      const w = workloads.get(key(kind, namespace, name));
      if (!w) throw new Error(`no ${kind} ${namespace}/${name} in the Kubernetes API double`);
      const { ready } = stateOf(w);
      return { spec: w.replicas, pods: w.pods.length, ready };
    },
    requests,
    stop: async () => {
      if (stopped) return;
      stopped = true;
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
