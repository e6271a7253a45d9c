import { ActivityCancellationType, proxyActivities, type ActivityInterfaceFor, type ActivityOptions } from '@temporalio/workflow';

// The two timeout profiles every runbook uses, from the settings its plan activity read out of the
// worker's config (so operators tune them in pgrunbook.yaml, not in code).

export interface StepSettings {
  heartbeatSeconds: number;
  longStepSeconds: number;
  retry: { maximumAttempts: number; initialIntervalSeconds: number; maximumIntervalSeconds: number };
}

/** `where.taskQueue`: the steps run on that task queue (a fleet's globals, on the server's site); default: the workflow's. */
export function activityProfiles<A extends object>(settings: StepSettings, where: { taskQueue?: string } = {}): { short: ActivityInterfaceFor<A>; long: ActivityInterfaceFor<A> } {
  const retry: ActivityOptions['retry'] = {
    maximumAttempts: settings.retry.maximumAttempts,
    initialInterval: settings.retry.initialIntervalSeconds * 1000,
    maximumInterval: settings.retry.maximumIntervalSeconds * 1000,
    backoffCoefficient: 2,
  };
  return {
    // Quick steps: SQL statements, API calls, small files.
    short: proxyActivities<A>({ startToCloseTimeout: '5 minutes', retry, ...where }),
    // Long steps heartbeat: a worker that dies is noticed after heartbeatSeconds and the step runs
    // again elsewhere, converging. Cancellation waits for the activity to clean up (partial
    // uploads, killed tools).
    long: proxyActivities<A>({
      startToCloseTimeout: settings.longStepSeconds * 1000,
      heartbeatTimeout: settings.heartbeatSeconds * 1000,
      cancellationType: ActivityCancellationType.WAIT_CANCELLATION_COMPLETED,
      retry,
      ...where,
    }),
  };
}
