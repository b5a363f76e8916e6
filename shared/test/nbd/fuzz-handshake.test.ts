import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import type { BlockBackend } from '../../src/nbd/block-backend.js';
import { ByteQueue } from '../../src/nbd/byte-queue.js';
import { Info, Opt, Rep } from '../../src/nbd/constants.js';
import { StaticExports } from '../../src/nbd/export-registry.js';
import { Handshake } from '../../src/nbd/handshake.js';
import { DEFAULT_NBD_LIMITS, type NbdServerLimits } from '../../src/nbd/limits.js';

// A client may send any option sequence, split into any chunks. The haggling answers each option as
// the NBD spec (doc/proto.md, "Fixed newstyle negotiation") says, in order, until one ends it; it
// enforces maxOptions and maxOptionBytes; and garbage makes it close or wait, never throw.

/** Wall-clock budget of each property (SR_FUZZ_MS raises it for a longer local hunt). Default 2 s. */
const FUZZ_MS = Number(process.env['SR_FUZZ_MS'] ?? 2000);
const budget = { numRuns: 1_000_000, interruptAfterTimeLimit: FUZZ_MS };

const OPTION_REPLY_MAGIC = 0x0003e889045565a9n;
const IHAVEOPT = 0x49484156454f5054n;

/** One option of the haggling phase as bytes, and what the spec says the server does with it. */
interface OptionCase {
  readonly bytes: Buffer;
  /** Reply types in order (INFO replies by info type), or how the haggling ends. */
  readonly expect: { replies: readonly string[]; end?: 'close' | 'transmission'; exportName?: true };
}

/** Small limits, so generated sequences reach them. */
const hsLimits: NbdServerLimits = { ...DEFAULT_NBD_LIMITS, maxOptionBytes: 256, maxOptions: 5 };
const hsExports = new StaticExports([
  { name: 'exp', description: 'disk', readOnly: false, backend: { size: 1 << 20 } as BlockBackend },
]);

function option(code: number, payload: Buffer, magic = IHAVEOPT): Buffer {
  const h = Buffer.alloc(16);
  h.writeBigUInt64BE(magic, 0);
  h.writeUInt32BE(code, 8);
  h.writeUInt32BE(payload.length, 12);
  return Buffer.concat([h, payload]);
}

const nameArb = fc.oneof(
  fc.constantFrom('exp', '', 'nope'),
  fc.string({ maxLength: 12 }),
  fc.constant('x'.repeat(300)),
);

/** Options a client may send, well-formed or not, each with the answer the spec gives. */
const optionArb: fc.Arbitrary<OptionCase> = fc.oneof(
  nameArb.map((n) => ({
    bytes: option(Opt.EXPORT_NAME, Buffer.from(n)),
    expect:
      hsExports.get(n) !== undefined
        ? { replies: [], end: 'transmission' as const, exportName: true as const }
        : { replies: [], end: 'close' as const },
  })),
  fc.constant({ bytes: option(Opt.ABORT, Buffer.alloc(0)), expect: { replies: ['ack'], end: 'close' as const } }),
  fc.uint8Array({ maxLength: 4 }).map((d) => ({
    bytes: option(Opt.LIST, Buffer.from(d)),
    expect: { replies: d.length === 0 ? ['server', 'ack'] : ['invalid'] },
  })),
  fc
    .record({
      go: fc.boolean(),
      name: nameArb,
      infos: fc.array(fc.integer({ min: 0, max: 6 }), { maxLength: 4 }),
      // Bytes cut from or added to the end, so the counts no longer add up.
      skew: fc.oneof({ weight: 5, arbitrary: fc.constant(0) }, fc.integer({ min: -8, max: 3 })),
    })
    .map(({ go, name, infos, skew }): OptionCase => {
      const n = Buffer.from(name);
      const p = Buffer.alloc(4 + n.length + 2 + 2 * infos.length);
      p.writeUInt32BE(n.length, 0);
      n.copy(p, 4);
      p.writeUInt16BE(infos.length, 4 + n.length);
      infos.forEach((t, i) => p.writeUInt16BE(t, 4 + n.length + 2 + 2 * i));
      const payload = skew <= 0 ? p.subarray(0, Math.max(0, p.length + skew)) : Buffer.concat([p, Buffer.alloc(skew)]);
      const code = go ? Opt.GO : Opt.INFO;
      const wanted = [Info.NAME, Info.DESCRIPTION, Info.BLOCK_SIZE].filter((t) => infos.includes(t));
      const replies =
        skew !== 0 || n.length > 4096
          ? ['invalid']
          : hsExports.get(name) === undefined
            ? ['unknown']
            : [...wanted.map((t) => `info${t}`), `info${Info.EXPORT}`, 'ack'];
      const served = replies.at(-1) === 'ack';
      return { bytes: option(code, payload), expect: { replies, ...(go && served ? { end: 'transmission' } : {}) } };
    }),
  fc
    .record({ code: fc.oneof(fc.constantFrom(4, 5, 8, 9, 10, 11), fc.integer({ min: 12, max: 0xffffffff })) })
    .chain(({ code }) => fc.uint8Array({ maxLength: 8 }).map((d) => ({ code, d })))
    .map(({ code, d }) => ({ bytes: option(code, Buffer.from(d)), expect: { replies: ['unsupported'] } })),
  fc.constant({ bytes: option(Opt.LIST, Buffer.alloc(0), 0x1234n), expect: { replies: [], end: 'close' as const } }),
  fc.constant({ bytes: option(Opt.LIST, Buffer.alloc(257)), expect: { replies: [], end: 'close' as const } }),
);

const REPLY_NAMES: Record<number, string> = {
  [Rep.ACK]: 'ack',
  [Rep.SERVER]: 'server',
  [Rep.ERR_UNSUP]: 'unsupported',
  [Rep.ERR_INVALID]: 'invalid',
  [Rep.ERR_UNKNOWN]: 'unknown',
};

/** The option replies in `sent`, by name; fails on anything not framed as one. */
function parseReplies(sent: Buffer, exportInfoBytes: number): string[] {
  const names: string[] = [];
  let at = 0;
  while (at < sent.length - exportInfoBytes) {
    expect(sent.length - at, 'a truncated option reply').toBeGreaterThanOrEqual(20);
    expect(sent.readBigUInt64BE(at), 'option reply magic').toBe(OPTION_REPLY_MAGIC);
    const type = sent.readUInt32BE(at + 12);
    const len = sent.readUInt32BE(at + 16);
    expect(at + 20 + len, 'an option reply longer than what was sent').toBeLessThanOrEqual(sent.length);
    names.push(type === Rep.INFO ? `info${sent.readUInt16BE(at + 20)}` : (REPLY_NAMES[type] ?? `type ${type}`));
    at += 20 + len;
  }
  return names;
}

describe('NBD option haggling under fuzzing', () => {
  it('answers any option sequence, split anywhere, as the spec says, within maxOptions and maxOptionBytes', () => {
    const case_ = fc.record({
      flags: fc.oneof({ weight: 6, arbitrary: fc.constantFrom(1, 3) }, fc.constantFrom(0, 2, 4, 0x80000001)),
      options: fc.array(optionArb, { maxLength: 16 }),
      tail: fc.uint8Array({ maxLength: 40 }),
      cuts: fc.array(fc.nat(), { maxLength: 12 }),
    });
    fc.assert(
      fc.property(case_, ({ flags, options, tail, cuts }) => {
        // The model: the spec's answer to each option until one ends the haggling.
        const want: string[] = [];
        let end: 'close' | 'transmission' | 'more' = (flags & ~3) !== 0 ? 'close' : 'more';
        let exportName = false;
        for (const [i, o] of options.entries()) {
          if (end !== 'more') break;
          if (o.bytes.readUInt32BE(12) > hsLimits.maxOptionBytes || i >= hsLimits.maxOptions) {
            end = 'close';
            break;
          }
          want.push(...o.expect.replies);
          end = o.expect.end ?? 'more';
          exportName = o.expect.exportName === true;
        }
        const flagBytes = Buffer.alloc(4);
        flagBytes.writeUInt32BE(flags >>> 0);
        const stream = Buffer.concat([flagBytes, ...options.map((o) => o.bytes), tail]);
        const sent: Buffer[] = [];
        const hs = new Handshake(hsExports, hsLimits, (b) => sent.push(Buffer.from(b)));
        const q = new ByteQueue();
        let state: string = 'more';
        const points = [...new Set(cuts.map((c) => c % (stream.length + 1)))].sort((a, b) => a - b);
        for (const [from, to] of [0, ...points].map((p, i, all) => [p, all[i + 1] ?? stream.length])) {
          q.push(stream.subarray(from, to));
          state = hs.feed(q).state;
          if (state !== 'more') break;
        }
        const exportNameInfo = state === 'transmission' && exportName ? ((flags & 2) !== 0 ? 10 : 134) : 0;
        const got = parseReplies(Buffer.concat(sent), exportNameInfo);
        if (end === 'more' && tail.length > 0) {
          // The tail is garbage: it may start one more option, answered or closed on, never thrown on.
          expect(got.slice(0, want.length)).toEqual(want);
        } else {
          expect(got).toEqual(want);
          expect(state).toBe(end);
        }
      }),
      budget,
    );
  });
});
