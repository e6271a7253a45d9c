import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { temporalConnectionOptions } from '../client/temporal-connection.js';
import { ConfigError } from '../config/errors.js';
import { TemporalConfig } from '../config/schema.js';
import { scrubSecrets } from '../process/secrets.js';

describe('temporalConnectionOptions', () => {
  it('connects in plain text to the configured address by default', () => {
    expect(temporalConnectionOptions(TemporalConfig.parse({ address: 'temporal:7233' }), {})).toEqual({ address: 'temporal:7233' });
  });

  it('reads mTLS material from the configured files', () => {
    const dir = mkdtempSync(join(tmpdir(), 'pgrunbook-tls-'));
    for (const name of ['ca.pem', 'client.pem', 'client.key']) writeFileSync(join(dir, name), `-----${name}-----`);
    const options = temporalConnectionOptions(
      TemporalConfig.parse({ tls: { caFile: join(dir, 'ca.pem'), certFile: join(dir, 'client.pem'), keyFile: join(dir, 'client.key'), serverNameOverride: 'temporal.internal' } }),
      {},
    );
    expect(options.tls).toEqual({
      serverNameOverride: 'temporal.internal',
      serverRootCACertificate: Buffer.from('-----ca.pem-----'),
      clientCertPair: { crt: Buffer.from('-----client.pem-----'), key: Buffer.from('-----client.key-----') },
    });
  });

  it('takes the API key from the named environment variable, turns TLS on, and treats the key as a secret', () => {
    const options = temporalConnectionOptions(TemporalConfig.parse({ apiKeyEnv: 'MY_TEMPORAL_KEY' }), { MY_TEMPORAL_KEY: 'tk-abcdef123456' });
    expect(options).toEqual({ address: 'localhost:7233', apiKey: 'tk-abcdef123456', tls: true });
    expect(scrubSecrets('auth with tk-abcdef123456 failed')).toBe('auth with *** failed');
  });

  it('refuses a missing API key variable, naming the field and the variable', () => {
    const call = () => temporalConnectionOptions(TemporalConfig.parse({ apiKeyEnv: 'MY_TEMPORAL_KEY' }), {});
    expect(call).toThrow(ConfigError);
    expect(call).toThrow(/temporal\.apiKeyEnv: environment variable MY_TEMPORAL_KEY is not set/);
  });
});
