import { DefaultFailureConverter } from '@temporalio/common';

// With the payload codec on, failure messages and stack traces travel as an encoded payload
// (which the codec encrypts) instead of plain strings in the history: they name databases,
// backups and hosts. The SDK loads this module by path, in the worker and inside the workflow
// bundle; it must stay self-contained (Node's own require loads it, from source in tests).
export const failureConverter = new DefaultFailureConverter({ encodeCommonAttributes: true });
