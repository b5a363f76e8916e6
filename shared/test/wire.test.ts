import { describe, expect, it } from 'vitest';
import {
  AgentHelloSchema,
  BatchSchema,
  BatchScratch,
  crc32c,
  DEFAULT_WIRE_LIMITS,
  MessageSchema,
  RecordKind,
  decodeBatch,
  decodeMessage,
  encodeBatch,
  encodeMessage,
  isSrError,
  lastLsn,
  recordChecksum,
  type ChangeRecord,
} from '../src/index.js';

const disks = [
  { id: 'os', size: 1 << 30 },
  { id: 'data', size: 1 << 20 },
];

const write = (lsn: number, disk: number, offset: number, bytes: Buffer): ChangeRecord => ({
  lsn,
  kind: RecordKind.WRITE,
  disk,
  offset,
  length: bytes.length,
  data: bytes,
  time: 1700000000000,
});

async function roundTrip(records: ChangeRecord[]): Promise<{ frame: Buffer; decoded: ChangeRecord[] }> {
  const { frame } = await encodeBatch(records, { vm: 'web01', generation: 'g1' });
  return { frame, decoded: decodeBatch(decodeMessage(frame, BatchSchema), disks, DEFAULT_WIRE_LIMITS) };
}

async function expectRejected(
  mutate: (b: ReturnType<typeof decodeMessage<typeof BatchSchema>>) => void,
  code: string,
): Promise<void> {
  const { frame } = await encodeBatch(
    [write(7, 0, 4096, Buffer.alloc(8192, 0xab)), { lsn: 8, kind: RecordKind.ZERO, disk: 1, offset: 0, length: 4096 }],
    { vm: 'web01', generation: 'g1' },
  );
  const b = decodeMessage(frame, BatchSchema);
  mutate(b);
  let err: unknown;
  try {
    decodeBatch(b, disks, DEFAULT_WIRE_LIMITS);
  } catch (e) {
    err = e;
  }
  expect(isSrError(err), String(err)).toBe(true);
  expect((err as { code: string }).code).toBe(code);
}

describe('record checksum', () => {
  it('is CRC-32C over the canonical block and the payload', () => {
    // The canonical block of {lsn 0x0102030405, write, disk 2, offset 0x10000000200, length 3}, by hand.
    const canonical = Buffer.from(
      '53524a52' + '01' + '00' + '0002' + '0000000102030405' + '0000010000000200' + '00000003' + '00000003',
      'hex',
    );
    const expected = crc32c(Buffer.concat([canonical, Buffer.from('abc')]));
    expect(crc32c(Buffer.from('123456789'))).toBe(0xe3069283); // the CRC-32C check value
    expect(
      recordChecksum({ lsn: 0x0102030405, kind: 1, disk: 2, offset: 0x10000000200, length: 3 }, Buffer.from('abc')),
    ).toBe(expected);
  });
});

describe('batch codec', () => {
  it('round-trips writes, zeroes, trims and sync markers, compressing what compresses', async () => {
    const recs: ChangeRecord[] = [
      write(10, 0, 0, Buffer.alloc(65536, 7)),
      { lsn: 11, kind: RecordKind.ZERO, disk: 1, offset: 512, length: 4096, time: 5 },
      { lsn: 12, kind: RecordKind.TRIM, disk: 0, offset: 1 << 20, length: 1 << 20, time: 6 },
      write(13, 1, 1024, Buffer.from('hello world')),
      { lsn: 14, kind: RecordKind.SYNC, disk: 0, offset: 123456, length: 0, time: 7 },
    ];
    const { frame, decoded } = await roundTrip(recs);
    expect(frame.length).toBeLessThan(4096); // 64 KiB of one byte value compresses away
    expect(decoded.map(({ lsn, kind, disk, offset, length }) => ({ lsn, kind, disk, offset, length }))).toEqual(
      recs.map(({ lsn, kind, disk, offset, length }) => ({ lsn, kind, disk, offset, length })),
    );
    expect(decoded[0]!.data!.equals(recs[0]!.data!)).toBe(true);
    expect(decoded[3]!.data!.toString()).toBe('hello world');
    expect(decoded[1]!.time).toBe(5);
    expect(lastLsn(decodeMessage(frame, BatchSchema))).toBe(14);
  });

  it('sends incompressible payloads as they are', async () => {
    const random = Buffer.from(Array.from({ length: 8192 }, (_, i) => (i * 2654435761) >>> 24));
    const { frame } = await encodeBatch([write(1, 0, 0, random)], { vm: 'a', generation: 'g' });
    const b = decodeMessage(frame, BatchSchema);
    expect(b.codec === 'none' || b.data.length < random.length).toBe(true);
  });

  it('keeps every frame intact while later batches reuse the same scratch', async () => {
    // A sender keeps frames in flight while it encodes the next batches with one scratch.
    const scratch = new BatchScratch();
    const frames: { frame: Buffer; copy: Buffer; records: ChangeRecord[] }[] = [];
    for (let i = 0; i < 6; i++) {
      const records = [1, 2, 3].map((k) =>
        write(i * 3 + k, 0, k * 65536, Buffer.alloc(200_000 + i * 150_000 + k, (i * 3 + k) & 0xff)),
      );
      const { frame } = await encodeBatch(records, { vm: 'web01', generation: 'g1' }, scratch);
      frames.push({ frame, copy: Buffer.from(frame), records });
    }
    for (const f of frames) {
      expect(f.frame.equals(f.copy)).toBe(true);
      const decoded = decodeBatch(decodeMessage(f.frame, BatchSchema), disks, DEFAULT_WIRE_LIMITS);
      expect(decoded.map((r) => r.data!.equals(f.records[r.lsn - f.records[0]!.lsn]!.data!))).toEqual([
        true,
        true,
        true,
      ]);
    }
  });

  it('sends even compressible payloads as they are when told not to try', async () => {
    const { frame, compressed } = await encodeBatch([write(1, 0, 0, Buffer.alloc(64 * 1024, 1))], {
      vm: 'web01',
      generation: 'g1',
      tryCompress: false,
    });
    expect(compressed).toBe(false);
    expect(decodeMessage(frame, BatchSchema).codec).toBe('none');
  });

  it('refuses records that are not consecutive when encoding', async () => {
    await expect(
      encodeBatch([write(1, 0, 0, Buffer.alloc(512)), write(3, 0, 0, Buffer.alloc(512))], { vm: 'a', generation: 'g' }),
    ).rejects.toMatchObject({ code: 'SR_SEQUENCE' });
  });

  it('rejects a flipped payload bit with SR_CHECKSUM', () =>
    expectRejected((b) => (b.data[b.data.length - 1]! ^= 1), 'SR_CHECKSUM'));
  it('rejects a changed offset with SR_CHECKSUM', () => expectRejected((b) => (b.recs[15]! ^= 0x10), 'SR_CHECKSUM'));
  it('rejects a record past the end of its disk with SR_BOUNDS', () =>
    expectRejected((b) => (b.recs[32 + 8 + 5] = 0xff), 'SR_BOUNDS'));
  it('rejects an unknown disk index with SR_BOUNDS', () => expectRejected((b) => (b.recs[32 + 3] = 9), 'SR_BOUNDS'));
  it('rejects an unknown record kind with SR_PROTOCOL', () => expectRejected((b) => (b.recs[0] = 77), 'SR_PROTOCOL'));
  it('rejects a declared size that disagrees with the lz4 prefix, before decompressing', () =>
    expectRejected((b) => (b.raw += 1), 'SR_PROTOCOL'));
  it('rejects more records than maxBatchRecords', () =>
    expectRejected((b) => (b.count = DEFAULT_WIRE_LIMITS.maxBatchRecords + 1), 'SR_LIMIT'));
  it('rejects a payload beyond maxBatchRawBytes from its declared size', () =>
    expectRejected((b) => (b.raw = DEFAULT_WIRE_LIMITS.maxBatchRawBytes + 1), 'SR_LIMIT'));
  it('rejects a record table whose size does not match the count', () =>
    expectRejected((b) => (b.count = 3), 'SR_PROTOCOL'));
});

describe('message schemas', () => {
  it('rejects ids that could escape a directory', () => {
    const frame = encodeMessage({
      t: 'hello',
      v: 1,
      role: 'agent',
      vm: '../etc',
      generation: 'g1',
      disks: [{ id: 'os', size: 4096 }],
    });
    expect(() => decodeMessage(frame, AgentHelloSchema)).toThrow(
      expect.objectContaining({ code: 'SR_PROTOCOL' }) as Error,
    );
    const ok = encodeMessage({
      t: 'hello',
      v: 1,
      role: 'agent',
      vm: 'web01',
      generation: 'g1',
      disks: [{ id: 'os', size: 4096 }],
    });
    expect(decodeMessage(ok, AgentHelloSchema).vm).toBe('web01');
  });

  it('rejects undecodable bytes and wrong types with SR_PROTOCOL', () => {
    expect(() => decodeMessage(Buffer.from([0xc1]), MessageSchema)).toThrow(
      expect.objectContaining({ code: 'SR_PROTOCOL' }) as Error,
    );
    expect(() => decodeMessage(encodeMessage({ t: 'ack', lsn: -1 }), MessageSchema)).toThrow(
      expect.objectContaining({ code: 'SR_PROTOCOL' }) as Error,
    );
    expect(() => decodeMessage(encodeMessage({ t: 'nope' }), MessageSchema)).toThrow(
      expect.objectContaining({ code: 'SR_PROTOCOL' }) as Error,
    );
  });
});
