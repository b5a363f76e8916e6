import fsp from 'node:fs/promises';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { newSecretText } from '@site-recovery/shared';
import { AGENT_CLI, getJson, makeImage, nodeFlagsOf, run, startAgent, tempDir, waitUntil } from '@site-recovery/test';
import { groupFromOptions, type GroupOptions } from '../../src/cli/options.js';
import { listenAddress, parsePeers } from '../../src/group/group-config.js';
import { freePort } from './group-fixture.js';

// The group options are checked together before the agent creates anything, each mistake refused
// with a stable code and a message that says what to give instead.

let t: { dir: string; cleanup: () => Promise<void> };
let secretFile: string;
beforeAll(async () => {
  t = await tempDir('group-options');
  secretFile = path.join(t.dir, 'group.secret');
  await fsp.writeFile(secretFile, newSecretText() + '\n', { mode: 0o600 });
});
afterAll(() => t?.cleanup());

const PEERS = 'web01=10.0.0.4:20004,db01=10.0.0.5';
const opts = (more: Partial<GroupOptions> = {}): GroupOptions => ({
  group: 'shop',
  groupSecretFile: secretFile,
  peers: PEERS,
  ...more,
});
const refusal = (o: GroupOptions, replicates = true): { code?: string; message: string } => {
  try {
    groupFromOptions('web01', o, replicates);
  } catch (err) {
    return { code: (err as { code?: string }).code, message: (err as Error).message };
  }
  throw new Error('the options were accepted');
};

describe('group options', () => {
  it('takes every member with its address; the port defaults to 20004, listen to its own entry', () => {
    const g = groupFromOptions('web01', opts({ groupHoldTimeout: '250ms' }), true)!;
    expect(g.peers).toEqual([
      { vm: 'web01', host: '10.0.0.4', port: 20004 },
      { vm: 'db01', host: '10.0.0.5', port: 20004 },
    ]);
    expect(g.holdTimeoutMs).toBe(250);
    expect(g.secret.length).toBe(32);
    expect(listenAddress('web01', g)).toEqual({ host: '10.0.0.4', port: 20004 });
    expect(parsePeers('a=[::1]:7000,b=[fe80::1]')).toEqual([
      { vm: 'a', host: '::1', port: 7000 },
      { vm: 'b', host: 'fe80::1', port: 20004 },
    ]);
    expect(groupFromOptions('web01', {}, false)).toBeUndefined();
  });

  it.each([
    [
      'its own VM missing from --peers',
      () => opts({ peers: 'db01=10.0.0.5,app01=10.0.0.6' }),
      /no entry for this VM \(web01\).*add web01=HOST:PORT/,
    ],
    ['a VM named twice', () => opts({ peers: `${PEERS},db01=10.0.0.9` }), /names VM db01 twice/],
    ['an address with a bad port', () => opts({ peers: 'web01=10.0.0.4:99999,db01=10.0.0.5' }), /has port 99999/],
    ['an entry without an address', () => opts({ peers: 'web01=10.0.0.4,db01=' }), /"db01=" is not VM=HOST\[:PORT\]/],
    [
      'an IPv6 address without brackets',
      () => opts({ peers: 'web01=::1,db01=10.0.0.5' }),
      /"::1" of web01 is not HOST\[:PORT\]/,
    ],
    ['a group of one', () => opts({ peers: 'web01=10.0.0.4' }), /at least two members/],
    [
      '--group without a secret file',
      () => opts({ groupSecretFile: undefined }),
      /--group-secret-file FILE.*sr secret new --out FILE/,
    ],
    ['--group without --peers', () => opts({ peers: undefined }), /--group needs --peers VM=HOST:PORT/],
    [
      'a hold timeout over 500 ms',
      () => opts({ groupHoldTimeout: '600ms' }),
      /--group-hold-timeout 600ms is outside 10ms-500ms/,
    ],
    [
      'a hold timeout without a unit',
      () => opts({ groupHoldTimeout: '100' }),
      /--group-hold-timeout "100" has no unit/,
    ],
    ['--peers without --group', (): GroupOptions => ({ peers: PEERS }), /--peers needs --group NAME/],
  ] as const)('refuses %s with SR_BAD_OPTION', (_what, o, message) => {
    const r = refusal(o());
    expect(r.code).toBe('SR_BAD_OPTION');
    expect(r.message).toMatch(message);
  });

  it('refuses a group or VM name that is not an id with SR_BAD_ID', () => {
    expect(refusal(opts({ group: 'my group' })).code).toBe('SR_BAD_ID');
    expect(refusal(opts({ peers: 'web01=10.0.0.4,d b=10.0.0.5' })).code).toBe('SR_BAD_ID');
  });

  it('refuses a group without replication, and a secret file others may read', async () => {
    const noReplication = refusal(opts(), false);
    expect(noReplication.code).toBe('SR_BAD_OPTION');
    expect(noReplication.message).toMatch(/add --cache-store URL/);
    const readable = path.join(t.dir, 'readable.secret');
    await fsp.writeFile(readable, newSecretText(), { mode: 0o640 });
    await fsp.chmod(readable, 0o640);
    const open = refusal(opts({ groupSecretFile: readable }));
    expect(open.code).toBe('SR_BAD_OPTION');
    expect(open.message).toContain(`chmod 600 ${readable}`);
  });
});

describe('sr-agent with a group', () => {
  const image = (): string => path.join(t.dir, 'os.img');
  beforeAll(() => makeImage(image(), 16 << 20));

  const args = (peers: string, more: string[] = []): string[] => [
    ...['--cache-store', 'ws://127.0.0.1:9', '--insecure', '--status', '127.0.0.1:0'],
    ...['--group', 'shop', '--group-secret-file', secretFile, '--peers', peers, ...more],
  ];

  it('refuses a hold timeout over 500 ms at start, creating nothing', async () => {
    const dataDir = path.join(t.dir, 'refused-data');
    const r = await run(process.execPath, [
      ...nodeFlagsOf(AGENT_CLI),
      AGENT_CLI,
      ...['--vm', 'web01', '--disk', `os=${image()}`, '--data-dir', dataDir],
      ...args('web01=127.0.0.1:1,db01=127.0.0.1:2', ['--group-hold-timeout', '501ms']),
    ]);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/^sr-agent: SR_BAD_OPTION: --group-hold-timeout 501ms is outside/m);
    await expect(fsp.access(dataDir)).rejects.toThrow();
  });

  it('starts two members that connect, and shows the group in /status and its peers in /health', async () => {
    const peers = `web01=127.0.0.1:${await freePort()},db01=127.0.0.1:${await freePort()}`;
    const disk = (vm: string): { id: string; path: string }[] => [{ id: 'os', path: path.join(t.dir, `${vm}.img`) }];
    for (const vm of ['web01', 'db01']) await makeImage(disk(vm)[0]!.path, 16 << 20);
    const web = await startAgent({
      vm: 'web01',
      disks: disk('web01'),
      dataDir: path.join(t.dir, 'web01'),
      args: args(peers),
    });
    let db: Awaited<ReturnType<typeof startAgent>> | undefined;
    try {
      const webUrl = `http://${String(web.ready['status'])}`;
      const alone = (await getJson(`${webUrl}/health`)) as { ok: boolean; warnings?: { code: string }[] };
      expect(alone.ok).toBe(true);
      expect(alone.warnings?.map((w) => w.code)).toEqual(['SR_GROUP_PEER_DOWN']);

      db = await startAgent({ vm: 'db01', disks: disk('db01'), dataDir: path.join(t.dir, 'db01'), args: args(peers) });
      const group = await waitUntil(
        'web01 to show db01 connected in its status',
        async () => {
          const s = (await getJson(`${webUrl}/status`)) as { group?: { peers: { connected: boolean }[] } };
          return s.group?.peers.every((p) => p.connected) === true ? s.group : undefined;
        },
        20_000,
      );
      expect(group).toMatchObject({
        group: 'shop',
        vm: 'web01',
        coordinator: 'db01',
        holdTimeoutMs: 100,
        frequencyMs: 300_000,
        peers: [{ vm: 'db01', connected: true }],
        rounds: { started: 0, committed: 0, aborted: 0, refused: 0 },
        writeHoldMs: { count: 0 },
        authFailures: { count: 0 },
      });
      expect((await getJson(`${webUrl}/health`)) as object).not.toHaveProperty('warnings');
    } finally {
      if (db !== undefined) expect(await db.stop()).toBe(0);
      expect(await web.stop()).toBe(0);
    }
  });
});
