import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { projectRoot } from '../stack/binaries.js';

/** pgrunbook's own version, recorded in every manifest. */
export const PGRUNBOOK_VERSION: string = (JSON.parse(readFileSync(join(projectRoot, 'package.json'), 'utf8')) as { version: string }).version;
