import { existsSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { bundleWorkflowCode, type WorkflowBundle, type WorkflowBundleOption } from '@temporalio/worker';

const here = dirname(fileURLToPath(import.meta.url));

/** The workflows entry point, from source (tests) or from dist (the CLI). */
export const workflowsPath = existsSync(join(here, '..', 'workflows', 'index.ts'))
  ? join(here, '..', 'workflows', 'index.ts')
  : join(here, '..', 'workflows', 'index.js');

/** Where `npm run build` puts the pre-built bundle (dist/workflow-bundle.js). */
export const prebuiltBundlePath = join(here, '..', 'workflow-bundle.js');

/** Bundles the workflow code in memory (tests, and running from source). */
export async function bundleWorkflows(): Promise<WorkflowBundle> {
  return bundleWorkflowCode({ workflowsPath, logger: quietBundlerLogger });
}

/**
 * The bundle a worker runs: the one pre-built by `npm run build` when present, so a production
 * worker never runs webpack (seconds of CPU and ~150 MB of memory at every start).
 */
export async function loadWorkflowBundle(): Promise<WorkflowBundleOption> {
  return existsSync(prebuiltBundlePath) ? { codePath: prebuiltBundlePath } : bundleWorkflows();
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
  const { code } = await bundleWorkflows();
  writeFileSync(prebuiltBundlePath, code);
  console.log(`wrote ${prebuiltBundlePath} (${(code.length / 1024).toFixed(0)} KiB)`);
}
