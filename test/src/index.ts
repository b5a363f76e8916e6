export { run, runOk, waitForEvent, nodeFlagsOf, SYSTEM_PATH } from './process.js';
export type { RunOptions, RunResult } from './process.js';
export { tempDir, makeImage, sha256, firstDifference } from './files.js';
export { startAgent, AGENT_CLI, JOURNAL_CLI } from './agent-process.js';
export type { AgentProcess, StartAgentOptions } from './agent-process.js';
export { REQUIRED_TOOLS, missingTools, requireTools } from './tools.js';
export { ThrottleProxy } from './throttle-proxy.js';
export type { ThrottleOptions } from './throttle-proxy.js';
export {
  startService,
  startCacheStore,
  startProcessor,
  getJson,
  waitUntil,
  CACHE_STORE_CLI,
  PROCESSOR_CLI,
} from './services.js';
export type { ServiceProcess } from './services.js';
export { ReplicationEnv } from './replication-env.js';
export type { ProtectedVm } from './replication-env.js';
export { SR_CLI, runSr, srJson, srOk } from './sr-cli.js';
export type { SrManifest, SrPoint } from './sr-cli.js';
export { BLOCK, parseWriterLog, startBlockWriter, writerPrefixOf } from './block-writer.js';
export { listTree } from './dir-tree.js';
export type { BlockWriter, BlockWriterOptions, WriterLog } from './block-writer.js';
