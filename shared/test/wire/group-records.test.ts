import { describe, expect, it } from 'vitest';
import {
  BatchSchema,
  DEFAULT_WIRE_LIMITS,
  RecordKind,
  decodeBatch,
  decodeGroupRecord,
  decodeMessage,
  encodeBatch,
  encodeGroupRecord,
  isSrError,
  type ChangeRecord,
} from '../../src/index.js';

const disks = [{ id: 'os', size: 1 << 20 }];
const mark = {
  group: 'shop',
  round: '3.17',
  coordinator: 'db01',
  members: ['db01', 'web01', 'web02'],
  time: 1_765_000_000_000,
};

const write = (lsn: number, fill: number): ChangeRecord => ({
  lsn,
  kind: RecordKind.WRITE,
  disk: 0,
  offset: 4096,
  length: 4096,
  data: Buffer.alloc(4096, fill),
  time: 1,
});

const groupRecord = (lsn: number, kind: number, doc: object): ChangeRecord => ({
  lsn,
  kind: kind as ChangeRecord['kind'],
  disk: 0,
  offset: 0,
  length: 0,
  data: encodeGroupRecord(doc as never),
  time: 2,
});

async function frameOf(records: ChangeRecord[]): Promise<ReturnType<typeof decodeMessage<typeof BatchSchema>>> {
  const { frame } = await encodeBatch(records, { vm: 'web01', generation: 'g1' });
  return decodeMessage(frame, BatchSchema);
}

function codeOf(fn: () => unknown): string | undefined {
  try {
    fn();
  } catch (err) {
    return isSrError(err) ? err.code : String(err);
  }
  return undefined;
}

describe('group records in a batch', () => {
  it('carry their JSON between writes, which keep their bytes', async () => {
    const records = [
      write(10, 0xaa),
      groupRecord(11, RecordKind.GROUP_MARK, mark),
      write(12, 0xbb),
      groupRecord(13, RecordKind.GROUP_COMMIT, { group: 'shop', round: '3.17' }),
      groupRecord(14, RecordKind.GROUP_ABORT, {
        group: 'shop',
        round: '3.18',
        failedBy: 'web02',
        code: 'SR_GROUP_TIMEOUT',
        reason: 'web02 did not answer PREPARE within 100 ms',
      }),
    ];
    const out = decodeBatch(await frameOf(records), disks, DEFAULT_WIRE_LIMITS);
    expect(out.map((r) => r.kind)).toEqual(records.map((r) => r.kind));
    expect(out[0]!.data).toEqual(Buffer.alloc(4096, 0xaa));
    expect(out[2]!.data).toEqual(Buffer.alloc(4096, 0xbb));
    expect(decodeGroupRecord(out[1]!.kind, out[1]!.data)).toEqual({ kind: RecordKind.GROUP_MARK, doc: mark });
    expect(decodeGroupRecord(out[3]!.kind, out[3]!.data).doc).toEqual({ group: 'shop', round: '3.17' });
    expect(decodeGroupRecord(out[4]!.kind, out[4]!.data).doc).toMatchObject({ failedBy: 'web02' });
  });

  it('are covered by the record checksum: a changed member list is refused', async () => {
    const b = await frameOf([groupRecord(5, RecordKind.GROUP_MARK, mark)]);
    const data = Buffer.from(b.data.buffer, b.data.byteOffset, b.data.length);
    data.write('"evil"', data.indexOf('"db01"', data.indexOf('members')));
    expect(codeOf(() => decodeBatch(b, disks, DEFAULT_WIRE_LIMITS))).toBe('SR_CHECKSUM');
  });

  it('refuse payload bytes declared on a record that is not a group record', async () => {
    const b = await frameOf([{ lsn: 5, kind: RecordKind.ZERO, disk: 0, offset: 0, length: 4096 }]);
    Buffer.from(b.recs.buffer, b.recs.byteOffset, b.recs.length).writeUInt32BE(8, 20);
    expect(codeOf(() => decodeBatch(b, disks, DEFAULT_WIRE_LIMITS))).toBe('SR_PROTOCOL');
  });

  it('refuse a group record with a length, or with no payload', async () => {
    const long = await frameOf([groupRecord(5, RecordKind.GROUP_COMMIT, { group: 'shop', round: '1.1' })]);
    Buffer.from(long.recs.buffer, long.recs.byteOffset, long.recs.length).writeUInt32BE(512, 16);
    expect(codeOf(() => decodeBatch(long, disks, DEFAULT_WIRE_LIMITS))).toBe('SR_PROTOCOL');
    const empty = await frameOf([{ lsn: 5, kind: RecordKind.GROUP_COMMIT, disk: 0, offset: 0, length: 0 }]);
    expect(codeOf(() => decodeBatch(empty, disks, DEFAULT_WIRE_LIMITS))).toBe('SR_PROTOCOL');
  });

  it('refuse a document that is not what its kind says, with SR_PROTOCOL', () => {
    const bad = (kind: number, doc: unknown): string | undefined =>
      codeOf(() => decodeGroupRecord(kind, Buffer.from(JSON.stringify(doc))));
    expect(bad(RecordKind.GROUP_MARK, { ...mark, members: [] })).toBe('SR_PROTOCOL');
    expect(bad(RecordKind.GROUP_MARK, { ...mark, round: '../x' })).toBe('SR_PROTOCOL');
    expect(bad(RecordKind.GROUP_MARK, { ...mark, time: 1e20 })).toBe('SR_PROTOCOL'); // no Date can show it
    expect(bad(RecordKind.GROUP_COMMIT, { group: '../etc', round: '1.1' })).toBe('SR_PROTOCOL');
    expect(bad(RecordKind.WRITE, { group: 'shop', round: '1.1' })).toBe('SR_PROTOCOL');
    expect(codeOf(() => decodeGroupRecord(RecordKind.GROUP_COMMIT, Buffer.from('{not json')))).toBe('SR_PROTOCOL');
  });
});
