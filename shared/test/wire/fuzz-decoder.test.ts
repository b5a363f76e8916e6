import fc from 'fast-check';
import type * as Lz4 from 'lz4-napi';
import { describe, expect, it, vi } from 'vitest';
import { RecordKind, type ChangeRecord } from '../../src/change-record.js';
import { ErrorCode, SrError } from '../../src/errors.js';
import { recordChecksum } from '../../src/record-checksum.js';
import { RECORD_ENTRY_BYTES, checkBatchShape, decodeBatch, encodeBatch } from '../../src/wire/batch.js';
import { decodeMessage, encodeMessage } from '../../src/wire/codec.js';
import type { WireLimits } from '../../src/wire/limits.js';
import * as messages from '../../src/wire/messages.js';
import { BatchSchema, type Batch, type DiskInfo } from '../../src/wire/messages.js';

// What a hostile peer can put in a frame meets the decoder first. Whatever arrives, the decoder either
// yields a message its schema admits or throws an SrError with a stable code; it never asks lz4 for
// more memory than the limits allow, and what it accepts is exactly what was sent.

/** Wall-clock budget of each property (SR_FUZZ_MS raises it for a longer local hunt). Default 2 s. */
const FUZZ_MS = Number(process.env['SR_FUZZ_MS'] ?? 2000);
const budget = { numRuns: 1_000_000, interruptAfterTimeLimit: FUZZ_MS };

/** Small limits, so generated batches reach every limit check. */
const LIMITS: WireLimits = {
  maxFrameBytes: 1 << 20,
  maxBatchRecords: 32,
  maxBatchRawBytes: 96 * 1024,
  maxRecordBytes: 8 * 1024,
  maxDisks: 4,
};
const DISKS: DiskInfo[] = [
  { id: 'os', size: 1 << 20 },
  { id: 'data', size: 64 * 1024 + 512 },
];

// Each size lz4 is asked to produce, read from the prefix of what it is given: a lying prefix must be
// refused before lz4 sizes its output buffer by it.
const lz4 = vi.hoisted(() => ({ declared: [] as number[] }));
vi.mock('lz4-napi', async (importOriginal) => {
  const real = await importOriginal<typeof Lz4>();
  return {
    ...real,
    uncompressSync: (data: Buffer) => {
      const declared = data.length >= 4 ? data.readUInt32LE(0) : 0;
      lz4.declared.push(declared);
      if (declared > LIMITS.maxBatchRawBytes) throw new Error(`lz4 asked to allocate ${declared} bytes`);
      return real.uncompressSync(data);
    },
  };
});

const SCHEMAS = Object.entries(messages).filter(
  (e): e is [string, typeof messages.MessageSchema] => e[0].endsWith('Schema') && typeof e[1] === 'object',
);
/** External memory the fuzzing itself may hold alive between collections. */
const MEMORY_SLACK_BYTES = 256 * 1024 * 1024;
const STABLE_CODES = new Set<string>(Object.values(ErrorCode));

/** Runs `f`; anything thrown must be an SrError with one of `codes` and a message. */
function refusedOnly<T>(codes: readonly string[], f: () => T): T | SrError {
  try {
    return f();
  } catch (err) {
    if (!(err instanceof SrError)) throw new Error(`threw ${String(err)} instead of an SrError`, { cause: err });
    expect(STABLE_CODES.has(err.code) && codes.includes(err.code), `code ${err.code}: ${err.message}`).toBe(true);
    expect(err.message).not.toBe('');
    return err;
  }
}

const BATCH_CODES = [ErrorCode.PROTOCOL, ErrorCode.LIMIT, ErrorCode.BOUNDS, ErrorCode.CHECKSUM];

/** Decodes `frame` with every schema; a batch that passes goes on through the record validator. */
function decodeEverywhere(frame: Buffer): void {
  for (const [name, schema] of SCHEMAS) {
    const m = refusedOnly([ErrorCode.PROTOCOL], () => decodeMessage(frame, schema));
    if (m instanceof SrError) continue;
    expect(schema.safeParse(m).success, `${name} yielded what it does not admit`).toBe(true);
  }
  const b = refusedOnly([ErrorCode.PROTOCOL], () => decodeMessage(frame, BatchSchema));
  if (!(b instanceof SrError)) refusedOnly(BATCH_CODES, () => decodeBatch(b, DISKS, LIMITS));
}

// Keys and values of the protocol, and the names that trip code reading a hostile object.
const KEYS = (
  't v role vm generation disks id size first count recs codec raw data progress done total lsn vms from code ' +
  'message durableLsn firstLsn lastLsn appConsistentFrequencyMs toString valueOf __proto__ constructor'
).split(' ');
const WORDS =
  'hello welcome batch ack vms subscribe stream applied policy error agent processor lz4 none web01 g1 ../etc'
    .split(' ')
    .concat('');
const NUMBERS = [0, 1, -1, 2 ** 31, 2 ** 32, Number.MAX_SAFE_INTEGER, 2 ** 53 + 2, NaN, Infinity, 0.5];

const hostileValue: fc.Arbitrary<unknown> = fc.letrec<{ v: unknown }>((tie) => ({
  v: fc.oneof(
    { depthSize: 'small', withCrossShrink: true },
    fc.constantFrom(...WORDS, ...NUMBERS, null, true),
    fc.string({ maxLength: 80 }),
    fc.integer(),
    fc.double(),
    fc.uint8Array({ maxLength: 96 }),
    fc.array(tie('v'), { maxLength: 4 }),
    fc.dictionary(fc.constantFrom(...KEYS), tie('v'), { maxKeys: 6 }),
  ),
})).v;

/** A well-formed message of every type the protocol has. */
const validMessage: fc.Arbitrary<object> = (() => {
  const id = fc.stringMatching(/^[A-Za-z0-9][A-Za-z0-9._-]{0,8}$/);
  const lsn = fc.integer({ min: 1, max: Number.MAX_SAFE_INTEGER });
  const disks = fc.array(fc.record({ id, size: fc.integer({ min: 1, max: 2 ** 40 }) }), { minLength: 1, maxLength: 3 });
  return fc.oneof(
    fc.record({
      t: fc.constant('hello'),
      v: fc.constant(1),
      role: fc.constant('agent'),
      vm: id,
      generation: id,
      disks,
    }),
    fc.record({ t: fc.constant('hello'), v: fc.constant(1), role: fc.constant('processor') }),
    fc.record({ t: fc.constant('welcome'), v: fc.constant(1), durableLsn: lsn }),
    fc.record({ t: fc.constant('ack'), lsn }),
    fc.record({
      t: fc.constant('vms'),
      vms: fc.array(fc.record({ vm: id, generation: id, disks, firstLsn: lsn, lastLsn: lsn }), { maxLength: 2 }),
    }),
    fc.record({ t: fc.constant('subscribe'), vm: id, generation: fc.option(id), from: lsn }),
    fc.record({ t: fc.constant('stream'), vm: id, generation: id, disks, from: lsn }),
    fc.record({ t: fc.constant('applied'), vm: id, generation: id, lsn }),
    fc.record({ t: fc.constant('policy'), vm: id, appConsistentFrequencyMs: fc.nat() }),
    fc.record({ t: fc.constant('error'), code: fc.string({ maxLength: 64 }), message: fc.string({ maxLength: 200 }) }),
  );
})();

/** Consecutive records that fit {@link DISKS} and {@link LIMITS}: what a sender would batch. */
const validRecords: fc.Arbitrary<ChangeRecord[]> = fc
  .tuple(
    fc.integer({ min: 1, max: Number.MAX_SAFE_INTEGER - 64 }),
    fc.array(
      fc.record({
        kind: fc.constantFrom(RecordKind.WRITE, RecordKind.ZERO, RecordKind.TRIM, RecordKind.SYNC, RecordKind.APP),
        disk: fc.constantFrom(0, 1),
        at: fc.double({ min: 0, max: 1, noNaN: true }),
        length: fc.nat({ max: 64 * 1024 }),
        // Some payloads compress (the lz4 path), some do not.
        payload: fc.oneof(
          fc.uint8Array({ maxLength: 4096 }),
          fc.tuple(fc.nat({ max: 4096 }), fc.nat({ max: 255 })).map(([n, v]) => new Uint8Array(n).fill(v)),
        ),
        time: fc.double(),
      }),
      { minLength: 1, maxLength: 16 },
    ),
  )
  .map(([first, specs]) =>
    specs.map((s, i): ChangeRecord => {
      const size = DISKS[s.disk]!.size;
      const marker = s.kind === RecordKind.SYNC || s.kind === RecordKind.APP;
      const write = s.kind === RecordKind.WRITE;
      const length = marker ? 0 : write ? s.payload.length : s.length;
      const offset = marker ? Math.floor(s.at * Number.MAX_SAFE_INTEGER) : Math.floor(s.at * (size - length));
      const base = { lsn: first + i, kind: s.kind, disk: s.disk, offset, length, time: s.time };
      return write ? { ...base, data: Buffer.from(s.payload) } : base;
    }),
  );

/** Edits a copy of `b`: byte flips, 32-bit words set to edge values, cuts and insertions. */
const mutation = fc.array(
  fc.oneof(
    fc.record({ op: fc.constant('flip' as const), at: fc.nat(), xor: fc.integer({ min: 1, max: 255 }) }),
    fc.record({ op: fc.constant('word' as const), at: fc.nat(), value: fc.constantFrom(0, 1, 0x7fffffff, 0xffffffff) }),
    fc.record({ op: fc.constant('cut' as const), at: fc.nat(), len: fc.nat({ max: 16 }) }),
    fc.record({
      op: fc.constant('insert' as const),
      at: fc.nat(),
      bytes: fc.uint8Array({ minLength: 1, maxLength: 8 }),
    }),
  ),
  { minLength: 1, maxLength: 4 },
);
type Mutation = typeof mutation extends fc.Arbitrary<infer M> ? M : never;

function mutate(b: Buffer, edits: Mutation): Buffer {
  let out = Buffer.from(b);
  for (const e of edits) {
    if (out.length === 0) break;
    const at = e.at % out.length;
    if (e.op === 'flip') out[at]! ^= e.xor;
    else if (e.op === 'word' && at + 4 <= out.length) out.writeUInt32BE(e.value, at);
    else if (e.op === 'cut') out = Buffer.concat([out.subarray(0, at), out.subarray(at + e.len)]);
    else if (e.op === 'insert') out = Buffer.concat([out.subarray(0, at), e.bytes, out.subarray(at)]);
  }
  return out;
}

async function batchFrame(records: ChangeRecord[], tryCompress: boolean): Promise<Buffer> {
  return (await encodeBatch(records, { vm: 'web01', generation: 'g1', tryCompress })).frame;
}

describe('frame decoder under fuzzing', () => {
  it('answers arbitrary bytes with a message or SR_PROTOCOL, for every schema', () => {
    const bytes = fc.oneof(
      fc.uint8Array({ maxLength: 512 }),
      // A msgpack map header first, so the bytes get past the first byte more often.
      fc.tuple(fc.integer({ min: 0x81, max: 0x8f }), fc.uint8Array({ maxLength: 256 })).map(([h, r]) => [h, ...r]),
    );
    fc.assert(
      fc.property(bytes, (b) => decodeEverywhere(Buffer.from(b))),
      budget,
    );
  });

  it('answers hostile msgpack objects with a message or SR_PROTOCOL, for every schema', () => {
    const examples: [unknown][] = [[{ t: { toString: 1, valueOf: 1 } }], [{ t: 'batch', recs: 'x', count: 2 ** 40 }]];
    fc.assert(
      fc.property(hostileValue, (v) => decodeEverywhere(encodeMessage(v as object))),
      { ...budget, examples },
    );
  });

  it('answers mutated valid frames of every type with a message or a stable code', async () => {
    const frame = fc.oneof(
      validMessage.map((m) => encodeMessage(m)),
      fc.tuple(validRecords, fc.boolean()).map(([r, c]) => ({ records: r, compress: c })),
    );
    await fc.assert(
      fc.asyncProperty(frame, mutation, async (f, edits) => {
        const bytes = Buffer.isBuffer(f) ? f : await batchFrame(f.records, f.compress);
        decodeEverywhere(mutate(bytes, edits));
      }),
      budget,
    );
  });
});

describe('batch codec and record validator under fuzzing', () => {
  it('round-trips every valid batch exactly', async () => {
    await fc.assert(
      fc.asyncProperty(validRecords, fc.boolean(), async (records, compress) => {
        const decoded = decodeBatch(decodeMessage(await batchFrame(records, compress), BatchSchema), DISKS, LIMITS);
        expect(decoded).toEqual(records.map((r) => ({ ...r, crc: recordChecksum(r, r.data) })));
      }),
      budget,
    );
  });

  it('refuses a batch whose checksummed bytes were altered, or yields exactly what was sent', async () => {
    // Bytes of a record entry its CRC-32C covers: kind, disk, crc, offset, length (not padding or time).
    const covered = [0, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19];
    const edit = fc.record({ inRecs: fc.boolean(), at: fc.nat(), xor: fc.integer({ min: 1, max: 255 }) });
    await fc.assert(
      fc.asyncProperty(validRecords, fc.boolean(), fc.array(edit, { minLength: 1, maxLength: 3 }), async (r, c, e) => {
        const b = decodeMessage(await batchFrame(r, c), BatchSchema);
        const recs = Buffer.from(b.recs);
        const data = Buffer.from(b.data);
        for (const { inRecs, at, xor } of e) {
          const entry = Math.floor(at / covered.length) % r.length;
          if (inRecs) recs[entry * RECORD_ENTRY_BYTES + covered[at % covered.length]!]! ^= xor;
          else if (data.length > 0) data[at % data.length]! ^= xor;
        }
        const out = refusedOnly(BATCH_CODES, () => decodeBatch({ ...b, recs, data }, DISKS, LIMITS));
        if (out instanceof SrError) return;
        const fields = (x: ChangeRecord): unknown => [x.lsn, x.kind, x.disk, x.offset, x.length, x.data];
        expect(out.map(fields)).toEqual(r.map(fields));
      }),
      budget,
    );
  });

  it('refuses hostile batch fields, lying lz4 sizes included, before lz4 allocates past the limits', async () => {
    const lie = fc.constantFrom(0, 1, LIMITS.maxBatchRawBytes, LIMITS.maxBatchRawBytes + 1, 0x7fffffff, 0xffffffff);
    // Each field is the valid batch's own or a hostile one, so some batches get as far as lz4.
    const hostile = fc.record({
      count: fc.option(
        fc.oneof(fc.integer({ min: 1, max: 2 * LIMITS.maxBatchRecords }), fc.constantFrom(2 ** 31, 2 ** 53 - 1)),
      ),
      first: fc.option(fc.constantFrom(1, Number.MAX_SAFE_INTEGER)),
      recs: fc.option(
        fc.oneof(
          fc.uint8Array({ maxLength: 20 * RECORD_ENTRY_BYTES }),
          // A table as long as `count` says (when the count is hostile too, a consistent lie).
          fc.constant('count' as const),
        ),
      ),
      codec: fc.option(fc.constantFrom('lz4' as const, 'none' as const)),
      raw: fc.option(fc.oneof(fc.nat({ max: 200_000 }), lie)),
      // 'raw': the lz4 prefix agrees with the batch's declared size (a consistent lie, when that is large).
      prefix: fc.option(fc.oneof(lie, fc.constant('raw' as const))),
      data: fc.option(fc.uint8Array({ maxLength: 2048 })),
    });
    const start = process.memoryUsage().arrayBuffers;
    let decompressed = 0;
    await fc.assert(
      fc.asyncProperty(hostile, validRecords, async (h, records) => {
        const valid = decodeMessage(await batchFrame(records, true), BatchSchema);
        const raw = h.raw ?? valid.raw;
        const count = h.count ?? valid.count;
        const data = Buffer.from(h.data ?? valid.data);
        if (h.prefix !== null && data.length >= 4) data.writeUInt32LE(h.prefix === 'raw' ? raw >>> 0 : h.prefix, 0);
        const b: Batch = {
          ...valid,
          count,
          first: h.first ?? valid.first,
          codec: h.codec ?? valid.codec,
          raw,
          recs:
            h.recs === 'count' ? new Uint8Array(Math.min(count, 1 << 16) * RECORD_ENTRY_BYTES) : (h.recs ?? valid.recs),
          data,
        };
        // The shape check alone lets through only what the declared sizes keep within the limits.
        const shape = refusedOnly([ErrorCode.PROTOCOL, ErrorCode.LIMIT], () => checkBatchShape(b, LIMITS));
        if (!(shape instanceof SrError)) {
          expect(b.count).toBeLessThanOrEqual(LIMITS.maxBatchRecords);
          expect(b.recs.length).toBe(b.count * RECORD_ENTRY_BYTES);
          expect(b.raw).toBeLessThanOrEqual(LIMITS.maxBatchRawBytes);
          if (b.codec === 'lz4') expect(data.readUInt32LE(0)).toBe(b.raw);
          else expect(data.length).toBe(b.raw);
        }
        lz4.declared.length = 0;
        refusedOnly(BATCH_CODES, () => decodeBatch(b, DISKS, LIMITS));
        decompressed += lz4.declared.length;
        for (const size of lz4.declared) {
          expect(size, 'the size lz4 was asked for against the batch').toBe(b.raw);
          expect(size, 'the size lz4 was asked for against the limit').toBeLessThanOrEqual(LIMITS.maxBatchRawBytes);
        }
        // Live external memory stays near what the inputs hold (a lying size would add gigabytes).
        expect(process.memoryUsage().arrayBuffers - start).toBeLessThan(MEMORY_SLACK_BYTES);
      }),
      budget,
    );
    expect(decompressed, 'no generated batch got as far as lz4').toBeGreaterThan(0);
  });
});
