import { z } from 'zod';

// The `app:` section of a database in pgrunbook.yaml: which application writes to the database and
// how to stop it before a restore and bring it back afterwards. Types share their schema's name.
// Secrets are never values here: a password is the name of an environment variable (`*Env`).

const EnvName = z.string().regex(/^[A-Za-z_][A-Za-z0-9_]*$/, 'expected the name of an environment variable, e.g. PGBOUNCER_ADMIN_PASSWORD');
const Seconds = z.number({ error: 'expected a number of seconds' }).int('expected a whole number of seconds').positive('expected a positive number of seconds');
const NonEmpty = (what: string) =>
  z.string({ error: (issue) => (issue.input === undefined ? `required: ${what}` : `expected ${what} (a string)`) }).min(1, `expected ${what}, got an empty string`);

/** An HTTP endpoint that must answer ready after the application has been started again. */
export const HealthCheck = z
  .object({
    url: z.url({ protocol: /^https?$/, error: 'expected a full http(s) URL, e.g. http://app.internal:8080/health' }),
    timeoutSeconds: Seconds.default(300),
    intervalSeconds: z.number({ error: 'expected a number of seconds' }).positive('expected a positive number of seconds').default(2),
    /** Omitted: any 2xx status means ready. */
    expectStatus: z.number().int().min(100, 'expected an HTTP status code (100-599)').max(599, 'expected an HTTP status code (100-599)').optional(),
  })
  .strict();
export type HealthCheck = z.infer<typeof HealthCheck>;

export const NoneAppConfig = z
  .object({
    type: z.literal('none'),
    health: HealthCheck.optional(),
  })
  .strict();
export type NoneAppConfig = z.infer<typeof NoneAppConfig>;

export const KubernetesTarget = z
  .object({
    kind: z.enum(['Deployment', 'StatefulSet'], { error: 'expected kind Deployment or StatefulSet' }),
    name: NonEmpty('the workload name'),
    namespace: NonEmpty('a namespace').default('default'),
  })
  .strict();
export type KubernetesTarget = z.infer<typeof KubernetesTarget>;

export const KubernetesAppConfig = z
  .object({
    type: z.literal('kubernetes'),
    /** Path of a kubeconfig file. Omitted: in-cluster service account, else $KUBECONFIG or ~/.kube/config. */
    kubeconfig: NonEmpty('the path of a kubeconfig file').optional(),
    /** kubeconfig context to use instead of its current-context. */
    context: NonEmpty('a kubeconfig context name').optional(),
    targets: z.array(KubernetesTarget, { error: 'expected a list of targets ({kind, name, namespace})' }).min(1, 'expected at least one target'),
    /** How long stop waits for the workloads' pods to be gone. */
    podGoneTimeoutSeconds: Seconds.default(300),
    /** How long start waits for the workloads to report their replicas ready again. */
    readyTimeoutSeconds: Seconds.default(600),
    health: HealthCheck.optional(),
  })
  .strict();
export type KubernetesAppConfig = z.infer<typeof KubernetesAppConfig>;

export const ComposeAppConfig = z
  .object({
    type: z.literal('compose'),
    /** The compose file (docker compose -f FILE). */
    file: NonEmpty('the path of a compose file'),
    services: z.array(NonEmpty('a service name'), { error: 'expected a list of service names' }).min(1, 'expected at least one service'),
    projectName: NonEmpty('a compose project name').optional(),
    /** The docker binary (name on PATH or a path). */
    docker: NonEmpty('the docker binary').default('docker'),
    health: HealthCheck.optional(),
  })
  .strict();
export type ComposeAppConfig = z.infer<typeof ComposeAppConfig>;

export const CommandAppConfig = z
  .object({
    type: z.literal('command'),
    /** Shell command (/bin/sh -c) that stops the application and returns once it is down. Must be idempotent. */
    stop: NonEmpty('a shell command that stops the application'),
    /** Shell command (/bin/sh -c) that starts the application. Must be idempotent. */
    start: NonEmpty('a shell command that starts the application'),
    /** Optional shell command whose output is recorded in the snapshot (never a secret). */
    status: NonEmpty('a shell command that prints the application status').optional(),
    cwd: NonEmpty('a directory').optional(),
    timeoutSeconds: Seconds.default(300),
    health: HealthCheck.optional(),
  })
  .strict();
export type CommandAppConfig = z.infer<typeof CommandAppConfig>;

export const PgbouncerAppConfig = z
  .object({
    type: z.literal('pgbouncer'),
    /** pgbouncer's admin console (the special `pgbouncer` database). */
    host: NonEmpty('a host name or address').default('127.0.0.1'),
    port: z.number({ error: 'expected a TCP port number, e.g. 6432' }).int().min(1).max(65535, 'expected a TCP port number (1-65535)').default(6432),
    user: NonEmpty('an admin_users user name').default('pgbouncer'),
    /** Name of the environment variable holding the admin user's password. */
    passwordEnv: EnvName.optional(),
    /** The pgbouncer database (its [databases] entry) to PAUSE. */
    database: NonEmpty('the pgbouncer database name to pause'),
    /** Also DISABLE the database, so no new client connections are accepted while it is paused. */
    disable: z.boolean({ error: 'expected true or false' }).default(true),
    /**
     * How long PAUSE may wait for server connections to be released. In session pooling that is
     * until every client has disconnected, so stop the clients' sessions (or use transaction pooling).
     */
    pauseTimeoutSeconds: Seconds.default(300),
    health: HealthCheck.optional(),
  })
  .strict();
export type PgbouncerAppConfig = z.infer<typeof PgbouncerAppConfig>;

export const AppConfig = z.discriminatedUnion(
  'type',
  [NoneAppConfig, KubernetesAppConfig, ComposeAppConfig, CommandAppConfig, PgbouncerAppConfig],
  { error: 'expected type none, kubernetes, compose, command or pgbouncer' },
);
export type AppConfig = z.infer<typeof AppConfig>;
export type AppControllerType = AppConfig['type'];
