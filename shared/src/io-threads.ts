// Imported first by the CLIs: libuv sizes its thread pool on first use, so this must run before any
// asynchronous file I/O. Large writes, reads and fsyncs go through the pool; with the default of 4,
// requests at queue depth 32 wait for a thread (measured: 4k random writes 15.8k IOPS with 4 threads,
// 17.4k with 8, 17.6k with 16, before small writes were made inline). An explicit setting wins.
process.env['UV_THREADPOOL_SIZE'] ??= '16';
// lz4-napi allocates through mimalloc, which returns freed memory to the OS eagerly by default;
// with many batches in flight that made compression ~10x slower here (DESIGN.md machine facts).
process.env['MIMALLOC_PURGE_DELAY'] ??= '-1';
export {};
