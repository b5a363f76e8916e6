import type { Command } from 'commander';
import { ControlClient } from '../../api/control-client.js';
import type { Manifest } from '../../failover/manifest.js';
import { formatManifest } from '../sr-format.js';

/** What every `sr` subcommand gets: the control API client (built on use, from --processor) and output. */
export interface SrContext {
  client(): ControlClient;
  print(text: string): void;
  printJson(doc: unknown): void;
  /** A failover or test failover manifest, as a summary and table or as JSON. */
  printManifest(m: Manifest, json: boolean | undefined): void;
}

/** Adds one subcommand to the program (`program.command(...)`, so it inherits the program's settings). */
export type RegisterCommand = (program: Command, ctx: SrContext) => void;

export function srContext(processorUrl: () => string): SrContext {
  const print = (text: string): void => void process.stdout.write(text);
  const printJson = (doc: unknown): void => print(JSON.stringify(doc, null, 2) + '\n');
  return {
    client: () => new ControlClient(processorUrl()),
    print,
    printJson,
    printManifest: (m, json) => (json === true ? printJson(m) : print(formatManifest(m))),
  };
}
