import { createCommandController } from './command/controller.js';
import { createComposeController } from './compose/controller.js';
import { createKubernetesController } from './kubernetes/controller.js';
import { createNoneController } from './none/controller.js';
import { createPgbouncerController } from './pgbouncer/controller.js';
import type { AppConfig } from './schema.js';
import type { AppController } from './types.js';

type Factory<T extends AppConfig['type']> = (config: Extract<AppConfig, { type: T }>, env: NodeJS.ProcessEnv) => AppController;

/** Every application controller, by its config `type`. A new controller is a folder and one line here. */
export const appControllerFactories: { [T in AppConfig['type']]: Factory<T> } = {
  none: () => createNoneController(),
  kubernetes: (config) => createKubernetesController(config),
  compose: (config, env) => createComposeController(config, env),
  command: (config, env) => createCommandController(config, env),
  pgbouncer: (config, env) => createPgbouncerController(config, env),
};

/**
 * The controller for a database's `app:` config (already parsed by the AppConfig schema, so its
 * defaults are applied). `env` is the worker's environment: secrets are read from it by name.
 * Creating a controller does no I/O. `start` does not run the health check: the caller runs
 * `waitUntilHealthy(config.health, ...)` after it, so it can heartbeat while it waits.
 */
export function createAppController(config: AppConfig, env: NodeJS.ProcessEnv): AppController {
  const factory = appControllerFactories[config.type] as Factory<AppConfig['type']>;
  return factory(config, env);
}
