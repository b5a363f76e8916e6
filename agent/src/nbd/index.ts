export { NbdServer } from './server.js';
export type { NbdServerOptions } from './server.js';
export { PayloadPool } from './payload-pool.js';
export type { Payload, PayloadPoolOptions } from './payload-pool.js';
export { StaticExports } from './export-registry.js';
export type { ExportRegistry, NbdExport } from './export-registry.js';
export { DEFAULT_NBD_LIMITS } from './limits.js';
export type { NbdServerLimits } from './limits.js';
export * as nbdProtocol from './constants.js';
