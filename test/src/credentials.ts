import fsp from 'node:fs/promises';
import path from 'node:path';
import { runOk } from './process.js';
import { SR_CLI } from './sr-cli.js';

// Credentials made the way an operator makes them: `sr secret new --out FILE` for each daemon that
// checks tokens, `sr token issue --secret-file FILE ... --out FILE` for each holder. Every file is
// written 0600 by `sr` itself, in a directory of the test environment only its owner may enter.

/** Runs `sr secret new --out FILE`; FILE must not exist yet. */
export async function srSecretNew(file: string): Promise<string> {
  await runOk(process.execPath, [SR_CLI, 'secret', 'new', '--out', file]);
  return file;
}

/** Who a token is for: one VM's agent, or a role. */
export type TokenSubject = { readonly vm: string } | { readonly role: 'processor' | 'operator' };

export interface IssueOptions {
  /** `--expires`, e.g. `1s` or `90d` (sr's default). */
  readonly expires?: string;
  /** `--id`; sr picks a random one without it. */
  readonly id?: string;
}

/** Runs `sr token issue --secret-file SECRET (--vm NAME | --role ROLE) --out FILE`; FILE must not exist yet. */
export async function srTokenIssue(
  secretFile: string,
  subject: TokenSubject,
  file: string,
  o: IssueOptions = {},
): Promise<string> {
  await runOk(process.execPath, [
    SR_CLI,
    'token',
    'issue',
    '--secret-file',
    secretFile,
    ...('vm' in subject ? ['--vm', subject.vm] : ['--role', subject.role]),
    ...(o.expires !== undefined ? ['--expires', o.expires] : []),
    ...(o.id !== undefined ? ['--id', o.id] : []),
    '--out',
    file,
  ]);
  return file;
}

/** What `sr-cache-store` is started with: its secret, or `--insecure` (loopback only, no authentication). */
export type CacheStoreAuth =
  | 'insecure'
  | {
      readonly secretFile: string;
      /** A processor token of this cache-store: what its `/status` takes (ServiceProcess.tokenFile). */
      readonly statusTokenFile?: string;
      readonly revokedTokensFile?: string;
    };

/** What `sr-processor` is started with: its own secret and its cache-store token, or `--insecure`. */
export type ProcessorAuth =
  | 'insecure'
  | {
      readonly secretFile: string;
      /** `--cache-store-token-file`: a processor token signed with the cache-store's secret. */
      readonly cacheStoreTokenFile: string;
      /** An operator token of this processor: what its control API and `sr` take. */
      readonly operatorTokenFile: string;
      readonly revokedTokensFile?: string;
    };

/**
 * The credentials of one test deployment: the cache-store's and the processor's secrets, the
 * processor's token for the cache-store, an operator token for the processor, and one agent token
 * per VM (issued when first asked for).
 */
export class Credentials {
  private readonly agents = new Map<string, Promise<string>>();
  private issued = 0;

  private constructor(
    readonly dir: string,
    readonly cacheStoreSecretFile: string,
    readonly processorSecretFile: string,
    readonly processorTokenFile: string,
    readonly operatorTokenFile: string,
  ) {}

  /** Makes the secrets and the service tokens in `dir` (created 0700). */
  static async create(dir: string): Promise<Credentials> {
    await fsp.mkdir(dir, { recursive: true, mode: 0o700 });
    const f = (name: string): string => path.join(dir, name);
    const [cs, p] = await Promise.all([srSecretNew(f('cache-store.secret')), srSecretNew(f('processor.secret'))]);
    const [pt, ot] = await Promise.all([
      srTokenIssue(cs, { role: 'processor' }, f('processor.token'), { id: 'processor' }),
      srTokenIssue(p, { role: 'operator' }, f('operator.token'), { id: 'operator' }),
    ]);
    return new Credentials(dir, cs, p, pt, ot);
  }

  /** The agent token of `vm` (signed with the cache-store's secret). */
  agentTokenFile(vm: string): Promise<string> {
    let t = this.agents.get(vm);
    if (t === undefined) {
      t = srTokenIssue(this.cacheStoreSecretFile, { vm }, path.join(this.dir, `agent-${vm}.token`), {
        id: `agent-${vm}`,
      });
      this.agents.set(vm, t);
    }
    return t;
  }

  /** Another token, e.g. one an attacker might hold; `secretFile` is either daemon's secret or another. */
  issue(secretFile: string, subject: TokenSubject, o: IssueOptions = {}): Promise<string> {
    const name = `extra-${++this.issued}-${'vm' in subject ? subject.vm : subject.role}.token`;
    return srTokenIssue(secretFile, subject, path.join(this.dir, name), o);
  }

  cacheStoreAuth(): CacheStoreAuth {
    return { secretFile: this.cacheStoreSecretFile, statusTokenFile: this.processorTokenFile };
  }

  processorAuth(): ProcessorAuth {
    return {
      secretFile: this.processorSecretFile,
      cacheStoreTokenFile: this.processorTokenFile,
      operatorTokenFile: this.operatorTokenFile,
    };
  }
}
