export { backupDatabase } from './backup-database.js';
export { restoreDatabase } from './restore-database.js';
export { runRestoreDrill } from './restore-drill.js';
