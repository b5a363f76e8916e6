import { Packr } from 'msgpackr';
import type { z } from 'zod';
import { ErrorCode, SrError } from '../errors.js';

const packr = new Packr({ useRecords: false, mapsAsObjects: true, int64AsType: 'number' });

export function encodeMessage(message: object): Buffer {
  return packr.pack(message);
}

/** Packs only messages of {@link encodeBulkMessage}, each into memory of its own. */
const bulkPackr = new Packr({ useRecords: false, mapsAsObjects: true, int64AsType: 'number' });
/** Room for everything in a bulk message besides its binary fields (names, numbers, keys). */
const BULK_SLACK_BYTES = 4096;

/**
 * Encodes a message made mostly of binary fields totalling `binaryBytes` (a batch) into one buffer
 * allocated at about its final size. msgpackr's own buffer grows by allocating a larger one and
 * copying what it has written so far; for megabyte messages that allocated ~1.5 bytes per byte sent
 * (measured) and the external-memory pressure drove frequent full collections.
 */
export function encodeBulkMessage(message: object, binaryBytes: number): Buffer {
  bulkPackr.useBuffer(Buffer.allocUnsafeSlow(binaryBytes + BULK_SLACK_BYTES));
  return bulkPackr.pack(message);
}

/**
 * Decodes one message and checks it against `schema`. Binary fields of the result are views into
 * `frame` (msgpackr does not copy them). Throws SR_PROTOCOL with what was wrong.
 */
export function decodeMessage<S extends z.ZodType>(frame: Buffer, schema: S): z.infer<S> {
  let raw: unknown;
  try {
    raw = packr.unpack(frame);
  } catch (err) {
    throw new SrError(ErrorCode.PROTOCOL, `undecodable message: ${(err as Error).message}`);
  }
  const parsed = schema.safeParse(raw);
  if (!parsed.success) {
    // The type is echoed only when it is text: String() of a hostile object could throw.
    const t =
      typeof raw === 'object' && raw !== null && 't' in raw && typeof raw.t === 'string' ? raw.t.slice(0, 32) : '?';
    const issue = parsed.error.issues[0];
    throw new SrError(
      ErrorCode.PROTOCOL,
      `invalid "${t}" message: ${issue?.path.join('.') ?? ''} ${issue?.message ?? ''}`.trim(),
    );
  }
  return parsed.data;
}
