import { DefaultLogger, Runtime } from '@temporalio/worker';

// Keep test output readable: the SDK's INFO lines (worker state changes) add nothing here.
Runtime.install({ logger: new DefaultLogger('WARN') });
