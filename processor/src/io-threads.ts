// Imported first by the CLI: libuv sizes its thread pool on first use, so this must run before any
// asynchronous file I/O. Large replica writes, zeroing reads and the per-disk fsyncs of a durability
// round go through the pool; with the default of 4 they queue behind each other. An explicit
// setting wins.
process.env['UV_THREADPOOL_SIZE'] ??= '16';
// lz4-napi allocates through mimalloc, which returns freed memory to the OS eagerly by default;
// with many batches in flight that made compression ~10x slower here (DESIGN.md machine facts).
process.env['MIMALLOC_PURGE_DELAY'] ??= '-1';
export {};
