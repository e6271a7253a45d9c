import { AppControllerError } from './errors.js';
import type { AppSnapshot } from './types.js';

/** Refuses a snapshot taken by another kind of controller (a config changed between capture and start). */
export function expectSnapshot(snapshot: AppSnapshot, controller: string, target: string): void {
  if (snapshot.controller !== controller) {
    throw new AppControllerError(
      target,
      `the snapshot was taken by the ${String(snapshot.controller)} controller, not ${controller}`,
      "the database's app config changed while this restore ran; bring the application back by hand, as the snapshot in the workflow's history describes",
    );
  }
}
