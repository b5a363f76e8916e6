import type { BlockBackend } from './block-backend.js';

/** What the server publishes under one export name. */
export interface NbdExport {
  readonly name: string;
  readonly description: string;
  readonly backend: BlockBackend;
  readonly readOnly: boolean;
}

/** Looks exports up by name; the server holds no storage knowledge beyond this. */
export interface ExportRegistry {
  list(): readonly NbdExport[];
  get(name: string): NbdExport | undefined;
}

export class StaticExports implements ExportRegistry {
  private readonly byName = new Map<string, NbdExport>();

  constructor(exports: readonly NbdExport[], defaultName?: string) {
    for (const e of exports) this.byName.set(e.name, e);
    // "" is the default export (nbd://host:port with no path); it aliases the first one.
    const def = defaultName !== undefined ? this.byName.get(defaultName) : exports[0];
    if (def !== undefined && !this.byName.has('')) this.byName.set('', def);
  }

  list(): readonly NbdExport[] {
    return [...new Set(this.byName.values())];
  }

  get(name: string): NbdExport | undefined {
    return this.byName.get(name);
  }
}
