export { Agent } from './agent.js';
export type { AgentConfig, AgentStatus, DiskConfig } from './agent.js';
export { FileBackend } from './backend/file-backend.js';
export { CaptureBackend, LsnSequence, captureFilter } from './backend/capture-filter.js';
export { FileJournal } from './journal/file-journal.js';
export type { FileJournalOptions } from './journal/file-journal.js';
export type { Journal, JournalStats } from './journal/journal.js';
export { applyRecord } from './backend/apply-record.js';
