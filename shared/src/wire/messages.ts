import { z } from 'zod';
import { ID_PATTERN } from '../ids.js';
import { PROTOCOL_VERSION } from './limits.js';

/**
 * Messages of the replication protocol (agent → cache-store → processor). Each WebSocket binary
 * message is one msgpack map whose `t` names its type. Schemas are checked on every receive; ids are
 * checked against the id pattern before anything uses them as names.
 */
const id = z.string().regex(ID_PATTERN);
/** A generation names one continuous stream of a VM; a new one starts when continuity is lost. */
export const GENERATION_PATTERN = /^[A-Za-z0-9._-]{1,64}$/;
const generation = z.string().regex(GENERATION_PATTERN);
const lsn = z.number().int().min(0).max(Number.MAX_SAFE_INTEGER);
/** Binary field: a Buffer view into the received frame. */
const bytes = z.custom<Uint8Array>((v) => v instanceof Uint8Array, 'expected binary data');

export const DiskInfoSchema = z.object({ id, size: z.number().int().positive().max(Number.MAX_SAFE_INTEGER) });
export type DiskInfo = z.infer<typeof DiskInfoSchema>;

/**
 * How the agent sees the VM's writes. `nbd` (the default when absent): it fronts the disks, every write takes
 * an LSN in the order the VM issued it, and any LSN is a crash-consistent point. `watch`: it watches image
 * files another process writes and ships what changed by checksum; only its clean-scan markers
 * (RecordKind.SCAN) are states of the source, so the processor cuts points there and nowhere else.
 */
export const SourceModeSchema = z.enum(['nbd', 'watch']);
export type SourceMode = z.infer<typeof SourceModeSchema>;

export const AgentHelloSchema = z.object({
  t: z.literal('hello'),
  v: z.literal(PROTOCOL_VERSION),
  role: z.literal('agent'),
  vm: id,
  generation,
  disks: z.array(DiskInfoSchema).min(1),
  /** The replication group the VM belongs to (docs/multi-vm.md), so the processor can send it the group's policy. */
  group: id.optional(),
  /** Absent: `nbd`. A generation keeps one mode: the agent starts a new one when its mode changes. */
  mode: SourceModeSchema.optional(),
});
export type AgentHello = z.infer<typeof AgentHelloSchema>;

export const ProcessorHelloSchema = z.object({
  t: z.literal('hello'),
  v: z.literal(PROTOCOL_VERSION),
  role: z.literal('processor'),
});
export type ProcessorHello = z.infer<typeof ProcessorHelloSchema>;

export const HelloSchema = z.discriminatedUnion('role', [AgentHelloSchema, ProcessorHelloSchema]);

/** cache-store → agent: the last LSN of this VM and generation it holds durably (0: none). */
export const WelcomeSchema = z.object({ t: z.literal('welcome'), v: z.literal(PROTOCOL_VERSION), durableLsn: lsn });
export type Welcome = z.infer<typeof WelcomeSchema>;

/** Progress of the initial copy of a VM's disks, carried by the batches that ship it. */
export const ProgressSchema = z.object({ done: z.number().int().min(0), total: z.number().int().min(0) });
export type Progress = z.infer<typeof ProgressSchema>;

/**
 * Records `first` .. `first + count - 1`. `recs` holds one 32-byte entry per record (batch.ts);
 * `data` the WRITE payloads in order, concatenated, lz4-compressed when `codec` is 'lz4'.
 */
export const BatchSchema = z.object({
  t: z.literal('batch'),
  vm: id,
  generation,
  first: lsn.min(1),
  count: z.number().int().min(1),
  recs: bytes,
  codec: z.enum(['lz4', 'none']),
  raw: z.number().int().min(0),
  data: bytes,
  progress: ProgressSchema.optional(),
});
export type Batch = z.infer<typeof BatchSchema>;

/** Cumulative: every record up to `lsn` is durable at the sender. */
export const AckSchema = z.object({ t: z.literal('ack'), lsn });
export type Ack = z.infer<typeof AckSchema>;

export const VmInfoSchema = z.object({
  vm: id,
  generation,
  disks: z.array(DiskInfoSchema).min(1),
  firstLsn: lsn,
  lastLsn: lsn,
  /** The agent's replication group, from its latest hello. */
  group: id.optional(),
  /** The agent's mode, from its latest hello; absent: `nbd`. */
  mode: SourceModeSchema.optional(),
});
export type VmInfo = z.infer<typeof VmInfoSchema>;

/** cache-store → processor: the VMs it holds streams for (sent on connect and on every change). */
export const VmsSchema = z.object({ t: z.literal('vms'), vms: z.array(VmInfoSchema) });

/** processor → cache-store: send records of `vm` from LSN `from` of `generation` (null: any). */
export const SubscribeSchema = z.object({
  t: z.literal('subscribe'),
  vm: id,
  generation: generation.nullable(),
  from: lsn.min(1),
});
export type Subscribe = z.infer<typeof SubscribeSchema>;

/** cache-store → processor: batches of `vm` follow, starting at `from` of `generation`. */
export const StreamSchema = z.object({
  t: z.literal('stream'),
  vm: id,
  generation,
  disks: z.array(DiskInfoSchema).min(1),
  from: lsn.min(1),
});
export type Stream = z.infer<typeof StreamSchema>;

/** processor → cache-store: records up to `lsn` are applied and durable in the replicas. */
export const AppliedSchema = z.object({ t: z.literal('applied'), vm: id, generation, lsn });
export type Applied = z.infer<typeof AppliedSchema>;

/**
 * processor → cache-store → agent: the VM's replication policy as far as the agent acts on it.
 * `appConsistentFrequencyMs` 0 turns app-consistent points off. The commands themselves stay in the
 * agent's configuration: the target region never sends a command line to run beside the VM.
 */
export const PolicySchema = z.object({
  t: z.literal('policy'),
  vm: id,
  appConsistentFrequencyMs: z.number().int().min(0).max(Number.MAX_SAFE_INTEGER),
  /** How often the VM's replication group cuts multi-VM points (its coordinator acts on it); absent: no group policy. */
  multiVmFrequencyMs: z.number().int().min(1000).max(Number.MAX_SAFE_INTEGER).optional(),
});
export type Policy = z.infer<typeof PolicySchema>;

/** Block sizes a checksum resync may compare at: powers of two from 4 KiB to 1 MiB. */
const blockBytes = z
  .number()
  .int()
  .min(4096)
  .max(1024 * 1024)
  .refine((n) => (n & (n - 1)) === 0, 'expected a power of two');

/**
 * agent → cache-store → processor: the agent starts `generation` and asks for the sums of the replica's
 * blocks, so that it sends only the blocks that differ (checksum resync). The cache-store relays it to the
 * processor subscribed to the VM, or keeps the latest one per VM until a processor subscribes.
 */
export const SumsRequestSchema = z.object({
  t: z.literal('sums-request'),
  vm: id,
  generation,
  blockBytes,
  /** The sum function (`shared/src/block-sums.ts`); a processor that has another answers `available: false`. */
  algo: z.string().max(32),
});
export type SumsRequest = z.infer<typeof SumsRequestSchema>;

/**
 * processor → cache-store → agent: the sums of blocks `first`, `first + 1`, ... of disk `disk` (index in the
 * VM's disk list), `BLOCK_SUM_BYTES` each, in order; the last block of a disk may be short. Each block's sum
 * is of the replica between two applied records, never in the middle of one.
 */
export const SumsSchema = z.object({
  t: z.literal('sums'),
  vm: id,
  generation,
  disk: z.number().int().min(0).max(255),
  first: z.number().int().min(0).max(Number.MAX_SAFE_INTEGER),
  blockBytes,
  sums: bytes,
});
export type Sums = z.infer<typeof SumsSchema>;

/**
 * processor → cache-store → agent: the end of a sums answer. `available: false`: the replica cannot be a
 * base (none yet, another disk layout, another sum function): the agent copies every block, zero blocks
 * as ZERO records. `reason` says why, for the agent's log and status.
 */
export const SumsEndSchema = z.object({
  t: z.literal('sums-end'),
  vm: id,
  generation,
  blockBytes,
  available: z.boolean(),
  reason: z.string().max(256).optional(),
});
export type SumsEnd = z.infer<typeof SumsEndSchema>;

export const ErrorMessageSchema = z.object({
  t: z.literal('error'),
  code: z.string().max(64),
  message: z.string().max(4096),
});
export type ErrorMessage = z.infer<typeof ErrorMessageSchema>;

export const MessageSchema = z.discriminatedUnion('t', [
  z.object({ t: z.literal('hello') }).passthrough(),
  WelcomeSchema,
  BatchSchema,
  AckSchema,
  VmsSchema,
  SubscribeSchema,
  StreamSchema,
  AppliedSchema,
  PolicySchema,
  SumsRequestSchema,
  SumsSchema,
  SumsEndSchema,
  ErrorMessageSchema,
]);

/** What an agent may receive after its welcome. */
export const AgentInboundSchema = z.discriminatedUnion('t', [
  AckSchema,
  PolicySchema,
  SumsSchema,
  SumsEndSchema,
  ErrorMessageSchema,
]);
