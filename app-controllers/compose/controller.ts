import { runTool, ToolError } from '../../process/run.js';
import { AppControllerError, messageOf } from '../errors.js';
import type { ComposeAppConfig } from '../schema.js';
import { expectSnapshot } from '../snapshot.js';
import type { AppController, AppSnapshot } from '../types.js';

export type ComposeSnapshot = AppSnapshot & { controller: 'compose'; running: string[] };

/**
 * Stops and starts services of a Docker Compose project with `docker compose`. capture remembers
 * which of the configured services were running, so start brings back exactly those (a service an
 * operator had stopped on purpose stays stopped).
 */
export function createComposeController(config: ComposeAppConfig, env: NodeJS.ProcessEnv): AppController {
  const describe = (): string => `compose ${config.projectName ? `project ${config.projectName} ` : ''}services ${config.services.join(',')} (${config.file})`;
  const base = ['compose', '-f', config.file, ...(config.projectName ? ['-p', config.projectName] : [])];

  async function compose(args: string[], signal: AbortSignal, what: string): Promise<string> {
    try {
      return await runTool(config.docker, [...base, ...args], { env, cancelSignal: signal });
    } catch (error) {
      if (signal.aborted) throw error;
      // execa reports a binary that cannot be spawned (ENOENT, EACCES) with neither exit code nor signal.
      const notRunnable = error instanceof ToolError && error.exitCode === undefined && error.signal === undefined;
      throw new AppControllerError(
        describe(),
        notRunnable ? `could not ${what}: cannot run ${config.docker}` : `could not ${what}: ${messageOf(error)}`,
        notRunnable
          ? `install Docker with the compose plugin on the worker's machine, or set docker: to the binary's path (now ${config.docker})`
          : `run \`${config.docker} ${base.join(' ')} ps\` as the worker's user: the file, project name and access to the Docker daemon (the docker group) must all work`,
        { cause: error },
      );
    }
  }

  return {
    type: 'compose',
    describe,
    capture: async (signal): Promise<ComposeSnapshot> => {
      const out = await compose(['ps', '--services', '--status', 'running'], signal, 'list running services');
      const running = new Set(out.split('\n').map((line) => line.trim()).filter(Boolean));
      return { controller: 'compose', running: config.services.filter((service) => running.has(service)) };
    },
    stop: async (_snapshot, signal) => {
      // `docker compose stop` waits for the containers to exit and succeeds when they already have.
      await compose(['stop', ...config.services], signal, 'stop the services');
    },
    start: async (snapshot, signal) => {
      expectSnapshot(snapshot, 'compose', describe());
      const running = (snapshot as ComposeSnapshot).running;
      if (!Array.isArray(running) || running.some((s) => typeof s !== 'string')) {
        throw new AppControllerError(describe(), 'the snapshot has no list of running services', 'start the services by hand with docker compose start');
      }
      if (running.length === 0) return;
      await compose(['start', ...running], signal, 'start the services');
    },
  };
}
