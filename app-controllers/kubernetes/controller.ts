import { ApiException, AppsV1Api, CoreV1Api, KubeConfig, type V1Scale } from '@kubernetes/client-node';
import { AppControllerError, messageOf } from '../errors.js';
import type { KubernetesAppConfig, KubernetesTarget } from '../schema.js';
import { expectSnapshot } from '../snapshot.js';
import type { AppController, AppSnapshot } from '../types.js';
import { abortReason, sleep } from '../wait.js';

export type KubernetesSnapshot = AppSnapshot & {
  controller: 'kubernetes';
  targets: { kind: KubernetesTarget['kind']; namespace: string; name: string; replicas: number }[];
};

export interface KubernetesControllerOptions {
  /** How often pods and replica counts are polled while waiting. */
  pollMs?: number;
}

/**
 * Scales Deployments and StatefulSets to zero through their scale subresource and back to the
 * replica counts capture saw. stop returns once the workloads' pods are gone (terminating pods
 * still hold database connections); start returns once the workloads report their replicas ready.
 * Needs RBAC: get/update on deployments/scale and statefulsets/scale, get on the workloads, list
 * on pods, in each target namespace.
 */
export function createKubernetesController(config: KubernetesAppConfig, options: KubernetesControllerOptions = {}): AppController {
  const pollMs = options.pollMs ?? 1000;
  const label = (t: Pick<KubernetesTarget, 'kind' | 'namespace' | 'name'>): string => `${t.kind.toLowerCase()}/${t.namespace}/${t.name}`;
  const describe = (): string => `kubernetes ${config.targets.map(label).join(', ')}`;

  let clients: { apps: AppsV1Api; core: CoreV1Api; server: string } | undefined;
  function api(): { apps: AppsV1Api; core: CoreV1Api; server: string } {
    if (clients) return clients;
    const kc = new KubeConfig();
    try {
      if (config.kubeconfig) kc.loadFromFile(config.kubeconfig);
      else kc.loadFromDefault();
      if (config.context) kc.setCurrentContext(config.context);
      if (!kc.getCurrentCluster()) throw new Error(`context ${kc.getCurrentContext() || '(none)'} names no cluster`);
    } catch (error) {
      throw new AppControllerError(
        describe(),
        `cannot load the kubeconfig${config.kubeconfig ? ` ${config.kubeconfig}` : ''}: ${messageOf(error)}`,
        config.kubeconfig
          ? 'check the kubeconfig path and that its context names a cluster and a user'
          : 'set kubeconfig: in the app config, KUBECONFIG in the worker\'s environment, or run the worker in-cluster with a service account',
        { cause: error },
      );
    }
    clients = { apps: kc.makeApiClient(AppsV1Api), core: kc.makeApiClient(CoreV1Api), server: kc.getCurrentCluster()?.server ?? '?' };
    return clients;
  }

  /** Turns a client-library failure into an error naming the target, with a HINT. */
  async function call<T>(target: KubernetesTarget, what: string, run: () => Promise<T>): Promise<T> {
    try {
      return await run();
    } catch (error) {
      throw kubernetesError(target, what, error);
    }
  }

  function kubernetesError(target: KubernetesTarget, what: string, error: unknown): AppControllerError {
    const where = `kubernetes ${label(target)}`;
    if (error instanceof AppControllerError) return error;
    if (error instanceof ApiException) {
      const code = error.code;
      const reason = statusMessage(error.body) ?? (code === 401 ? 'Unauthorized' : 'no message');
      const hint =
        code === 404
          ? `check kind, name and namespace (kubectl -n ${target.namespace} get ${target.kind.toLowerCase()} ${target.name}) and that the kubeconfig context points at the right cluster`
          : code === 401
            ? 'the credentials in the kubeconfig were rejected: refresh the token or client certificate'
            : code === 403
              ? `RBAC: the worker's identity needs get/update on ${target.kind === 'Deployment' ? 'deployments' : 'statefulsets'}/scale, get on ${target.kind === 'Deployment' ? 'deployments' : 'statefulsets'} and list on pods in namespace ${target.namespace}`
              : code === 409
                ? 'someone else changed the workload at the same time; the step is safe to retry'
                : 'see the API server\'s message; the step is safe to retry';
      return new AppControllerError(where, `${what} failed: HTTP ${code}: ${reason}`, hint, { cause: error });
    }
    return new AppControllerError(
      where,
      `${what} failed: ${messageOf(error)}`,
      `check that the API server ${clients?.server ?? ''} is reachable from the worker and the kubeconfig context is the right one`,
      { cause: error },
    );
  }

  const readScale = (t: KubernetesTarget): Promise<V1Scale> =>
    call(t, 'reading the scale', () =>
      t.kind === 'Deployment'
        ? api().apps.readNamespacedDeploymentScale({ name: t.name, namespace: t.namespace })
        : api().apps.readNamespacedStatefulSetScale({ name: t.name, namespace: t.namespace }),
    );

  /** Sets spec.replicas (read-modify-write with the resourceVersion; retried on a conflict). */
  async function scaleTo(t: KubernetesTarget, replicas: number, signal: AbortSignal): Promise<V1Scale> {
    for (let attempt = 1; ; attempt++) {
      if (signal.aborted) throw abortReason(signal);
      const scale = await readScale(t);
      if (scale.spec?.replicas === replicas) return scale;
      const body: V1Scale = { ...scale, spec: { ...scale.spec, replicas } };
      try {
        return t.kind === 'Deployment'
          ? await api().apps.replaceNamespacedDeploymentScale({ name: t.name, namespace: t.namespace, body })
          : await api().apps.replaceNamespacedStatefulSetScale({ name: t.name, namespace: t.namespace, body });
      } catch (error) {
        if (error instanceof ApiException && error.code === 409 && attempt < 5) continue;
        throw kubernetesError(t, `scaling to ${replicas}`, error);
      }
    }
  }

  /** The label selector of the workload's pods: the scale's status.selector, else the workload's matchLabels. */
  async function podSelector(t: KubernetesTarget, scale: V1Scale): Promise<string> {
    if (scale.status?.selector) return scale.status.selector;
    const workload = await call(t, 'reading the workload', () =>
      t.kind === 'Deployment'
        ? api().apps.readNamespacedDeployment({ name: t.name, namespace: t.namespace })
        : api().apps.readNamespacedStatefulSet({ name: t.name, namespace: t.namespace }),
    );
    const labels = Object.entries(workload.spec?.selector?.matchLabels ?? {});
    if (labels.length === 0) {
      throw new AppControllerError(`kubernetes ${label(t)}`, 'cannot tell which pods belong to it (no selector)', 'give the workload a spec.selector.matchLabels');
    }
    return labels.map(([k, v]) => `${k}=${v}`).join(',');
  }

  async function waitUntilPodsGone(t: KubernetesTarget, selector: string, deadline: number, signal: AbortSignal): Promise<void> {
    for (;;) {
      const pods = await call(t, 'listing its pods', () => api().core.listNamespacedPod({ namespace: t.namespace, labelSelector: selector }));
      if (pods.items.length === 0) return;
      if (Date.now() >= deadline) {
        const names = pods.items.map((p) => p.metadata?.name ?? '?');
        throw new AppControllerError(
          `kubernetes ${label(t)}`,
          `scaled to 0 but ${names.length} pod(s) still exist after ${config.podGoneTimeoutSeconds}s: ${names.slice(0, 5).join(', ')}${names.length > 5 ? ', ...' : ''}`,
          `look at the pods (kubectl -n ${t.namespace} get pods -l ${selector}): a long terminationGracePeriodSeconds or a stuck finalizer keeps them; or raise podGoneTimeoutSeconds`,
        );
      }
      await sleep(pollMs, signal);
    }
  }

  async function waitUntilReady(t: KubernetesTarget, replicas: number, deadline: number, signal: AbortSignal): Promise<void> {
    for (;;) {
      const workload = await call(t, 'reading the workload', () =>
        t.kind === 'Deployment'
          ? api().apps.readNamespacedDeployment({ name: t.name, namespace: t.namespace })
          : api().apps.readNamespacedStatefulSet({ name: t.name, namespace: t.namespace }),
      );
      const ready = workload.status?.readyReplicas ?? 0;
      if (ready >= replicas) return;
      if (Date.now() >= deadline) {
        throw new AppControllerError(
          `kubernetes ${label(t)}`,
          `scaled back to ${replicas} but only ${ready} replica(s) are ready after ${config.readyTimeoutSeconds}s`,
          `look at the pods' events and logs (kubectl -n ${t.namespace} describe ${t.kind.toLowerCase()} ${t.name}); or raise readyTimeoutSeconds`,
        );
      }
      await sleep(pollMs, signal);
    }
  }

  return {
    type: 'kubernetes',
    describe,

    capture: async (signal): Promise<KubernetesSnapshot> => {
      const targets: KubernetesSnapshot['targets'] = [];
      for (const t of config.targets) {
        if (signal.aborted) throw abortReason(signal);
        const scale = await readScale(t);
        targets.push({ kind: t.kind, namespace: t.namespace, name: t.name, replicas: scale.spec?.replicas ?? 0 });
      }
      return { controller: 'kubernetes', targets };
    },

    stop: async (_snapshot, signal) => {
      // Scale every target down first, then wait: their pods terminate in parallel.
      const deadline = Date.now() + config.podGoneTimeoutSeconds * 1000;
      const selectors: string[] = [];
      for (const t of config.targets) selectors.push(await podSelector(t, await scaleTo(t, 0, signal)));
      for (const [i, t] of config.targets.entries()) await waitUntilPodsGone(t, selectors[i] ?? '', deadline, signal);
    },

    start: async (snapshot, signal) => {
      expectSnapshot(snapshot, 'kubernetes', describe());
      const targets = (snapshot as KubernetesSnapshot).targets;
      if (!Array.isArray(targets)) {
        throw new AppControllerError(describe(), 'the snapshot has no targets', 'scale the workloads back by hand (kubectl scale)');
      }
      const deadline = Date.now() + config.readyTimeoutSeconds * 1000;
      for (const t of targets) await scaleTo(t, t.replicas, signal);
      for (const t of targets) await waitUntilReady(t, t.replicas, deadline, signal);
    },
  };
}

/** The `message` of a Kubernetes Status object, whether the client parsed the body or not. */
function statusMessage(body: unknown): string | undefined {
  let parsed = body;
  if (typeof body === 'string') {
    try {
      parsed = JSON.parse(body);
    } catch {
      return body.slice(0, 300) || undefined;
    }
  }
  const message = (parsed as { message?: unknown } | undefined)?.message;
  return typeof message === 'string' ? message : undefined;
}
