export { backupDatabase } from './backup-database.js';
export { restoreDatabase } from './restore-database.js';
