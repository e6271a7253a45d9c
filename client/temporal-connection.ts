import { readFileSync } from 'node:fs';
import { Client, Connection, type TLSConfig } from '@temporalio/client';
import type { TemporalConfig } from '../config/schema.js';
import { ConfigError } from '../config/errors.js';
import { clientDataConverter } from '../encryption/payload-codec.js';
import { registerSecret } from '../process/secrets.js';

export interface TemporalConnectionOptions {
  address: string;
  tls?: TLSConfig | boolean;
  apiKey?: string;
}

/** Address, TLS files and API key (from the environment) for both client and worker connections. */
export function temporalConnectionOptions(config: TemporalConfig, env: NodeJS.ProcessEnv = process.env): TemporalConnectionOptions {
  const options: TemporalConnectionOptions = { address: config.address };
  if (config.tls) {
    const read = (file: string | undefined): Buffer | undefined => (file ? readFileSync(file) : undefined);
    options.tls = {
      serverNameOverride: config.tls.serverNameOverride,
      serverRootCACertificate: read(config.tls.caFile),
      clientCertPair: config.tls.certFile && config.tls.keyFile ? { crt: read(config.tls.certFile)!, key: read(config.tls.keyFile)! } : undefined,
    };
  }
  if (config.apiKeyEnv) {
    const apiKey = env[config.apiKeyEnv];
    if (!apiKey) {
      throw new ConfigError([{ path: 'temporal.apiKeyEnv', message: `environment variable ${config.apiKeyEnv} is not set`, hint: `export ${config.apiKeyEnv}=<your Temporal API key>` }], 'configuration');
    }
    registerSecret(apiKey);
    options.apiKey = apiKey;
    options.tls ??= true;
  }
  return options;
}

export async function connectClient(config: TemporalConfig): Promise<Connection> {
  const options = temporalConnectionOptions(config);
  try {
    return await Connection.connect({ ...options, connectTimeout: '10 seconds' });
  } catch (error) {
    throw new Error(
      `cannot reach Temporal at ${config.address}: ${(error as Error).message}\nHINT: start a worker environment (\`pgrunbook dev\`) or set temporal.address in pgrunbook.yaml`,
    );
  }
}

/** Runs `run` with a client of the configured namespace (payloads through the configured codec); the connection is closed afterwards. */
export async function withTemporalClient<T>(config: TemporalConfig, run: (client: Client) => Promise<T>): Promise<T> {
  const connection = await connectClient(config);
  try {
    return await run(new Client({ connection, namespace: config.namespace, dataConverter: clientDataConverter(config) }));
  } finally {
    await connection.close();
  }
}
