import path from 'node:path';
import type { Processor, ProcessorOptions } from '../src/processor.js';
import type { ReplicaStore } from '../src/replica/replica-store.js';
import { CacheStoreFixture } from './cache-store-fixture.js';
import { deadUrl, startProcessor, useCaseDirs } from './helpers.js';

/** What one case runs: the real cache-store (behind its wire tap) and a processor pulling from it. */
export interface ProcessorCase {
  /** The processor's data dir. */
  readonly dataDir: string;
  readonly cs: CacheStoreFixture;
  readonly processor: Processor;
}

export interface CaseStart {
  options?: ProcessorOptions;
  /** Runs before the processor starts: to seed its data dir or the cache-store. */
  prepare?: (dataDir: string, cs: CacheStoreFixture) => Promise<void>;
  /** The processor's store over its data dir, when the file store alone will not do. */
  store?: (dataDir: string) => ReplicaStore;
}

export interface ProcessorCases {
  /** A fresh cache-store and a processor pulling from it. */
  start(how?: CaseStart): Promise<ProcessorCase>;
  /** A processor whose cache-store address answers nothing; `prepare` seeds its data dir first. */
  startUnreachable(prepare?: (dataDir: string) => Promise<void>): Promise<{ dataDir: string; processor: Processor }>;
  /** The case running now (what `start` returned). */
  current(): ProcessorCase;
}

/**
 * The lifecycle the stream and recovery-point tests share: each case gets its own dir under one temp
 * dir per file, and what it started is stopped after it, the processor before its cache-store.
 */
export function useProcessorCases(name: string): ProcessorCases {
  let cs: CacheStoreFixture | undefined;
  let processor: Processor | undefined;
  let running: ProcessorCase | undefined;
  const caseDir = useCaseDirs(name, async () => {
    await processor?.close();
    await cs?.stop();
    processor = undefined;
    cs = undefined;
    running = undefined;
  });
  return {
    async start({ options, prepare, store } = {}) {
      const dir = caseDir();
      const dataDir = path.join(dir, 'processor');
      const started = await CacheStoreFixture.start(path.join(dir, 'cache-store'));
      cs = started;
      await prepare?.(dataDir, started);
      processor = await startProcessor(store?.(dataDir) ?? dataDir, started.url, options);
      running = { dataDir, cs: started, processor };
      return running;
    },
    async startUnreachable(prepare) {
      const dataDir = path.join(caseDir(), 'processor');
      await prepare?.(dataDir);
      processor = await startProcessor(dataDir, await deadUrl());
      return { dataDir, processor };
    },
    current() {
      if (running === undefined) throw new Error('no case is running: call start() first');
      return running;
    },
  };
}
