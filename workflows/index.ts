export { backupDatabase } from './backup-database.js';
export { pruneBackups } from './prune-backups.js';
export { restoreDatabase } from './restore-database.js';
export { runRestoreDrill } from './restore-drill.js';
