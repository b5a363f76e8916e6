import { ErrorCode, ROUND_PATTERN } from '@site-recovery/shared';
import { ControlApiError } from '../../api/control-client.js';

/** What a failover-like command acts on: one VM, or a whole replication group (`--group NAME`). */
export type Target = { readonly vm: string } | { readonly group: string };

/** The VM argument or `--group`, exactly one of them; refused here before anything is sent. */
export function targetOf(command: string, vm: string | undefined, group: string | undefined): Target {
  if (vm !== undefined && group !== undefined)
    throw new ControlApiError(2, ErrorCode.BAD_OPTION, `${command} takes a VM or --group NAME, not both`);
  if (vm !== undefined) return { vm };
  if (group !== undefined) return { group };
  throw new ControlApiError(2, ErrorCode.BAD_OPTION, `${command} needs a VM or --group NAME`);
}

/** A group is failed over to a group point: `latest-multi-vm` or an id `sr group-points` lists. */
export function checkGroupPoint(point: string): void {
  if (point !== 'latest-multi-vm' && !ROUND_PATTERN.test(point))
    throw new ControlApiError(
      2,
      ErrorCode.BAD_OPTION,
      `--point "${point}" with --group must be latest-multi-vm or a group point id (TERM.SEQ, from "sr group-points NAME")`,
    );
}
