import type { AgentHello, ProcessorHello } from '@site-recovery/shared';

/**
 * The one place a peer's credential is checked, before anything it names is used. Every peer is
 * accepted until per-VM and processor tokens arrive (DESIGN.md, "Security from the start"); a
 * refusal throws SR_AUTH, which the connection reports and closes on.
 */
export function checkCredential(_hello: AgentHello | ProcessorHello): void {
  // Accept: tokens are not issued yet.
}
