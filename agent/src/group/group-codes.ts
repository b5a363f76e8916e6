/**
 * Stable codes of the replication group: in logs, in the status (`lastFailure.code`,
 * `authFailures.last.code`) and in GROUP_ABORT records, where the processor and operators read them.
 */
export const GroupCode = {
  /** A peer's proof of the group secret, or a frame's MAC, did not verify: wrong secret or forged frame. */
  AUTH: 'SR_GROUP_AUTH',
  /** A peer introduced itself as a VM that is not in --peers (or as this VM). */
  UNKNOWN_PEER: 'SR_GROUP_UNKNOWN_PEER',
  /** A peer introduced itself as a member of another group. */
  WRONG_GROUP: 'SR_GROUP_WRONG_GROUP',
  /** An authenticated frame came again or out of order (its sequence number is not above the last). */
  REPLAY: 'SR_GROUP_REPLAY',
  /** A frame that is not what the protocol expects at this point (malformed, or before the handshake). */
  PROTOCOL: 'SR_GROUP_PROTOCOL',
  /** A frame over the size limit, or a peer that does not read what it is sent. */
  LIMIT: 'SR_GROUP_LIMIT',
  /** No COMMIT (member) or not every READY (coordinator) within the timeout. */
  TIMEOUT: 'SR_GROUP_TIMEOUT',
  /** A member was not connected when the round started, or its link dropped during the round. */
  MEMBER_DOWN: 'SR_GROUP_MEMBER_DOWN',
  /** The link to the coordinator dropped while this member held its writes. */
  COORDINATOR_DOWN: 'SR_GROUP_COORDINATOR_DOWN',
  /** The PREPARE's term is below the highest this member has seen. */
  STALE_TERM: 'SR_GROUP_STALE_TERM',
  /** Another coordinator already used the PREPARE's term with this member. */
  TERM_USED: 'SR_GROUP_TERM_USED',
  /** This member already holds its writes for another round. */
  BUSY: 'SR_GROUP_BUSY',
  /** This member cannot be cut now: initial copy running, journal at its cap or failed, replication failed. */
  NOT_READY: 'SR_GROUP_NOT_READY',
  /**
   * This member's VM is in bitmap mode or resyncing its dirty regions (its replica lacks writes until
   * the resync ends): it refuses rounds, and aborts the one it holds when bitmap mode begins.
   */
  BITMAP_MODE: 'SR_GROUP_BITMAP_MODE',
  /** The journal refused a group record. */
  JOURNAL: 'SR_GROUP_JOURNAL',
  /** The agent is stopping. */
  SHUTTING_DOWN: 'SR_GROUP_SHUTTING_DOWN',
} as const;

export type GroupCode = (typeof GroupCode)[keyof typeof GroupCode];

/** A peer broke the protocol or failed authentication: its link is closed and the code logged. */
export class PeerError extends Error {
  constructor(
    readonly code: GroupCode,
    message: string,
  ) {
    super(message);
    this.name = 'PeerError';
  }
}
