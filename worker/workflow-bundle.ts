import { existsSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { bundleWorkflowCode, type WorkflowBundle, type WorkflowBundleOption } from '@temporalio/worker';
import { failureConverterPath } from '../encryption/payload-codec.js';

const here = dirname(fileURLToPath(import.meta.url));

/** The workflows entry point, from source (tests) or from dist (the CLI). */
export const workflowsPath = existsSync(join(here, '..', 'workflows', 'index.ts'))
  ? join(here, '..', 'workflows', 'index.ts')
  : join(here, '..', 'workflows', 'index.js');

/** Where `npm run build` puts the pre-built bundle (dist/workflow-bundle.js). */
export const prebuiltBundlePath = join(here, '..', 'workflow-bundle.js');
/** The same with encoded failure attributes, for workers with the payload codec. */
export const prebuiltEncodedFailuresBundlePath = join(here, '..', 'workflow-bundle-encoded-failures.js');

export interface BundleOptions {
  /**
   * Failure messages and stack traces made by workflow code go into an encoded payload (which
   * the payload codec encrypts). Workflow failures are made inside the bundle, so the failure
   * converter is bundled: a worker with temporal.payloadCodec needs this variant.
   */
  encodeFailureAttributes?: boolean;
}

/** Bundles the workflow code in memory (tests, and running from source). */
export async function bundleWorkflows(options: BundleOptions = {}): Promise<WorkflowBundle> {
  return bundleWorkflowCode({ workflowsPath, logger: quietBundlerLogger, ...(options.encodeFailureAttributes ? { failureConverterPath } : {}) });
}

/**
 * The bundle a worker runs: the one pre-built by `npm run build` when present, so a production
 * worker never runs webpack (seconds of CPU and ~150 MB of memory at every start).
 */
export async function loadWorkflowBundle(options: BundleOptions = {}): Promise<WorkflowBundleOption> {
  const prebuilt = options.encodeFailureAttributes ? prebuiltEncodedFailuresBundlePath : prebuiltBundlePath;
  return existsSync(prebuilt) ? { codePath: prebuilt } : bundleWorkflows(options);
}

const quietBundlerLogger = {
  trace: () => undefined,
  debug: () => undefined,
  info: () => undefined,
  warn: (message: string, meta?: unknown) => console.warn(message, meta ?? ''),
  error: (message: string, meta?: unknown) => console.error(message, meta ?? ''),
  log: () => undefined,
};

// `node dist/worker/workflow-bundle.js` (run by `npm run build`) writes the pre-built bundle.
if (process.argv[1] === fileURLToPath(import.meta.url)) {
  for (const [path, options] of [[prebuiltBundlePath, {}], [prebuiltEncodedFailuresBundlePath, { encodeFailureAttributes: true }]] as const) {
    const { code } = await bundleWorkflows(options);
    writeFileSync(path, code);
    console.log(`wrote ${path} (${(code.length / 1024).toFixed(0)} KiB)`);
  }
}
