import { existsSync, readFileSync } from 'node:fs';
import { dirname, isAbsolute, resolve } from 'node:path';
import { parseDocument } from 'yaml';
import { Config } from './schema.js';
import { ConfigError, fromZodError } from './errors.js';
import { configPath } from './path.js';

export interface LoadedConfig {
  config: Config;
  /** Absolute path of the file it came from. */
  path: string;
}

export { configPath };

export function loadConfig(explicit?: string): LoadedConfig {
  const path = configPath(explicit);
  if (!existsSync(path)) {
    throw new ConfigError(
      [{ path: '', message: `no config file at ${path}`, hint: 'pass --config FILE or set PGRUNBOOK_CONFIG; `pgrunbook dev` needs none' }],
      'configuration',
    );
  }
  return { config: parseConfig(readFileSync(path, 'utf8'), path), path };
}

/** Parses and validates YAML text; relative local repository paths resolve against the file's folder. */
export function parseConfig(text: string, path = 'pgrunbook.yaml'): Config {
  const doc = parseDocument(text, { prettyErrors: true });
  if (doc.errors.length > 0) {
    throw new ConfigError(
      doc.errors.map((e) => ({ path: e.linePos ? `line ${e.linePos[0].line}, column ${e.linePos[0].col}` : '', message: e.message.split('\n')[0] ?? e.message, hint: 'fix the YAML syntax' })),
      path,
    );
  }
  const parsed = Config.safeParse(doc.toJS() ?? {});
  if (!parsed.success) throw fromZodError(parsed.error, path);
  const base = dirname(resolve(path));
  for (const repository of Object.values(parsed.data.repositories)) {
    if (repository.type === 'local' && !isAbsolute(repository.path)) repository.path = resolve(base, repository.path);
    const encryption = repository.encryption;
    if (encryption?.recipientsFile && !isAbsolute(encryption.recipientsFile)) encryption.recipientsFile = resolve(base, encryption.recipientsFile);
    if (encryption?.identityFile && !isAbsolute(encryption.identityFile)) encryption.identityFile = resolve(base, encryption.identityFile);
  }
  return parsed.data;
}
