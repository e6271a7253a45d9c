import type { Config } from '../config/schema.js';
import { ConfigError } from '../config/errors.js';
import { LocalRepository } from './local/local-repository.js';
import { S3Repository } from './s3/s3-repository.js';
import type { Repository } from './types.js';

/** Repositories by id, built once per process from config; drivers are registered here only. */
export class RepositoryRegistry {
  private readonly built = new Map<string, Repository>();

  constructor(
    private readonly config: Config,
    private readonly env: NodeJS.ProcessEnv = process.env,
  ) {}

  get(id: string): Repository {
    const existing = this.built.get(id);
    if (existing) return existing;
    const spec = this.config.repositories[id];
    if (!spec) {
      throw new ConfigError(
        [{ path: 'repository', message: `unknown repository "${id}"`, hint: `known repositories: ${Object.keys(this.config.repositories).join(', ')}` }],
        'input',
      );
    }
    const repository = spec.type === 'local' ? new LocalRepository(id, spec.path) : new S3Repository(id, spec, this.env);
    this.built.set(id, repository);
    return repository;
  }
}
