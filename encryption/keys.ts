import { readFile } from 'node:fs/promises';
import { ConfigError } from '../config/errors.js';
import type { Config, RepositoryConfig } from '../config/schema.js';
import { registerSecret } from '../process/secrets.js';
import { checkRecipient, parseIdentities, parseRecipients } from './age.js';

/** A repository's age keys as this process sees them: its config plus its files and environment. */
export interface RepositoryKeys {
  repository: string;
  /** Whom new backups are encrypted to; null: the repository's backups are not encrypted. */
  encryptTo: string[] | null;
  /** The secret keys this process holds for the repository; null: none (it cannot decrypt). */
  identities: string[] | null;
  /** The public keys of those identities: compared with a manifest's recipients. */
  identityRecipients: string[];
  /** The config field an operator sets to give this process an identity. */
  identityField: string;
}

/**
 * Reads a repository's recipients and identities. Files and variables are read on every call, so
 * a rotated key file is picked up without a restart. Identities are registered as secrets (masked
 * wherever they could be printed); errors name the field and the file, never a key.
 */
export async function resolveRepositoryKeys(id: string, spec: RepositoryConfig, env: NodeJS.ProcessEnv = process.env): Promise<RepositoryKeys> {
  const field = `repositories.${id}.encryption`;
  const encryption = spec.encryption;
  const keys: RepositoryKeys = { repository: id, encryptTo: null, identities: null, identityRecipients: [], identityField: `${field}.identityFile` };
  if (!encryption) return keys;
  const problem = (path: string, message: string, hint?: string): ConfigError => new ConfigError([{ path: `${field}.${path}`, message, ...(hint ? { hint } : {}) }], 'configuration');

  const recipients = [...(encryption.recipients ?? [])];
  for (const [i, recipient] of recipients.entries()) {
    try {
      checkRecipient(recipient, `recipient ${i + 1}`);
    } catch (error) {
      throw problem(`recipients[${i}]`, (error as Error).message, 'copy it again from `age-keygen -y key.txt`');
    }
  }
  if (encryption.recipientsFile) {
    let text: string;
    try {
      text = await readFile(encryption.recipientsFile, 'utf8');
    } catch (error) {
      throw problem('recipientsFile', `cannot read ${encryption.recipientsFile}: ${(error as NodeJS.ErrnoException).code ?? (error as Error).message}`, 'a file of age1... public keys, one per line (age-keygen -y key.txt > recipients.txt)');
    }
    try {
      recipients.push(...parseRecipients(text, encryption.recipientsFile));
    } catch (error) {
      throw problem('recipientsFile', (error as Error).message);
    }
  }
  keys.encryptTo = [...new Set(recipients)];

  let identityText: string | undefined;
  if (encryption.identityFile) {
    try {
      identityText = await readFile(encryption.identityFile, 'utf8');
    } catch (error) {
      throw problem('identityFile', `cannot read ${encryption.identityFile}: ${(error as NodeJS.ErrnoException).code ?? (error as Error).message}`, 'the age identity file (age-keygen -o key.txt) must be readable by the worker');
    }
  } else if (encryption.identityEnv) {
    keys.identityField = `${field}.identityEnv`;
    identityText = env[encryption.identityEnv];
    if (!identityText) throw problem('identityEnv', `environment variable ${encryption.identityEnv} is not set`, `export ${encryption.identityEnv}="$(grep AGE-SECRET-KEY key.txt)", or remove identityEnv on workers that only back up`);
  }
  if (identityText !== undefined) {
    for (const line of identityText.split(/\r?\n/)) registerSecret(line.trim());
    const where = encryption.identityFile ?? `environment variable ${encryption.identityEnv}`;
    try {
      const parsed = await parseIdentities(identityText, where);
      keys.identities = parsed.identities;
      keys.identityRecipients = parsed.recipients;
    } catch (error) {
      throw problem(encryption.identityFile ? 'identityFile' : 'identityEnv', (error as Error).message, 'an identity file as age-keygen writes it: AGE-SECRET-KEY-1... lines, # comments');
    }
  }
  return keys;
}

/**
 * At worker start and in `config check`: every repository's recipients and identities can be
 * read and parsed here, so a missing key file fails the deployment, not the next backup.
 * `repositoryIds`: only these (a site's worker: its own repositories); default all.
 */
export async function checkEncryptionKeys(config: Config, env: NodeJS.ProcessEnv = process.env, repositoryIds: string[] = Object.keys(config.repositories)): Promise<void> {
  const problems: ConfigError['problems'] = [];
  for (const [id, spec] of Object.entries(config.repositories)) {
    if (!repositoryIds.includes(id)) continue;
    try {
      await resolveRepositoryKeys(id, spec, env);
    } catch (error) {
      if (error instanceof ConfigError) problems.push(...error.problems);
      else throw error;
    }
  }
  if (problems.length > 0) throw new ConfigError(problems, 'worker environment');
}
