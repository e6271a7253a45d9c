import type { AppController, AppSnapshot } from '../types.js';

/** No application to stop: a restore goes ahead with whatever is connected (it terminates those connections itself). */
export function createNoneController(): AppController {
  return {
    type: 'none',
    describe: () => 'no application controller',
    capture: async (): Promise<AppSnapshot> => ({ controller: 'none' }),
    stop: async () => undefined,
    start: async () => undefined,
  };
}
