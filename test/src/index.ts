export { run, runOk, waitForEvent, SYSTEM_PATH } from './process.js';
export type { RunOptions, RunResult } from './process.js';
export { tempDir, makeImage, sha256, firstDifference } from './files.js';
export { startAgent, AGENT_CLI, JOURNAL_CLI } from './agent-process.js';
export type { AgentProcess, StartAgentOptions } from './agent-process.js';
export { REQUIRED_TOOLS, missingTools, requireTools } from './tools.js';
