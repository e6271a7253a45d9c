export { backupDatabase } from './backup-database.js';
export { pruneBackups } from './prune-backups.js';
export { restoreDatabase } from './restore-database.js';
export { runRestoreDrill } from './restore-drill.js';
export { basebackupCluster } from './basebackup-cluster.js';
export { pruneBaseBackups } from './prune-base-backups.js';
export { pointInTimeRestore } from './point-in-time-restore.js';
export { backupFleet } from './backup-fleet.js';
