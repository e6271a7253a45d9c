export { backupDatabase } from './backup-database.js';
