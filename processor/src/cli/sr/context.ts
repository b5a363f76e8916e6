import type { Command } from 'commander';
import { loadTokenFile, readTlsCaFile } from '@site-recovery/shared';
import { ControlClient } from '../../api/control-client.js';
import type { Manifest } from '../../failover/manifest.js';
import { formatManifest } from '../sr-format.js';

/** What every `sr` subcommand gets: the control API client (built on use, from the options) and output. */
export interface SrContext {
  client(): ControlClient;
  print(text: string): void;
  printJson(doc: unknown): void;
  /** A failover or test failover manifest, as a summary and table or as JSON. */
  printManifest(m: Manifest, json: boolean | undefined): void;
}

/** Adds one subcommand to the program (`program.command(...)`, so it inherits the program's settings). */
export type RegisterCommand = (program: Command, ctx: SrContext) => void;

/** The program-wide options that say how to reach the processor. */
export interface SrConnection {
  readonly processor: string;
  /** An operator token file (`--token-file` / SR_TOKEN_FILE); read anew by every command. */
  readonly tokenFile?: string;
  /** The CA of an https:// processor (`--tls-ca` / SR_TLS_CA). */
  readonly tlsCa?: string;
}

export function srContext(connection: () => SrConnection): SrContext {
  const print = (text: string): void => void process.stdout.write(text);
  const printJson = (doc: unknown): void => print(JSON.stringify(doc, null, 2) + '\n');
  return {
    client: () => {
      const c = connection();
      const ca = readTlsCaFile(c.tlsCa);
      return new ControlClient(c.processor, {
        ...(c.tokenFile !== undefined ? { token: loadTokenFile(c.tokenFile) } : {}),
        ...(ca !== undefined ? { ca } : {}),
      });
    },
    print,
    printJson,
    printManifest: (m, json) => (json === true ? printJson(m) : print(formatManifest(m))),
  };
}
