import fs from 'node:fs';

/**
 * Promise wrappers over the callback fs API on raw descriptors. `fs/promises` FileHandle costs an
 * extra allocation and promise hop per call, which shows at tens of thousands of writes a second.
 */

export function pwrite(fd: number, buf: Buffer, position: number): Promise<void> {
  return new Promise((resolve, reject) => {
    const step = (done: number): void => {
      fs.write(fd, buf, done, buf.length - done, position + done, (err, n) => {
        if (err) reject(err);
        else if (done + n < buf.length) step(done + n);
        else resolve();
      });
    };
    step(0);
  });
}

export function pwritev(fd: number, bufs: Buffer[], position: number): Promise<void> {
  return new Promise((resolve, reject) => {
    fs.writev(fd, bufs, position, (err, n) => {
      if (err) return reject(err);
      const total = bufs.reduce((s, b) => s + b.length, 0);
      if (n === total) return resolve();
      // Short vectored write (rare: signals, quotas): finish the rest as one buffer.
      pwrite(fd, Buffer.concat(bufs).subarray(n), position + n).then(resolve, reject);
    });
  });
}

export function pread(fd: number, length: number, position: number): Promise<Buffer> {
  return preadInto(fd, Buffer.allocUnsafe(length), position);
}

/** Fills `buf` from `position`, like {@link pread}, for callers that reuse their memory. */
export function preadInto(fd: number, buf: Buffer, position: number): Promise<Buffer> {
  const length = buf.length;
  return new Promise((resolve, reject) => {
    const step = (done: number): void => {
      fs.read(fd, buf, done, length - done, position + done, (err, n) => {
        if (err) reject(err);
        else if (n === 0) {
          buf.fill(0, done); // past EOF of a file shorter than the disk: reads as zeroes
          resolve(buf);
        } else if (done + n < length) step(done + n);
        else resolve(buf);
      });
    };
    step(0);
  });
}

export function fdatasync(fd: number): Promise<void> {
  return new Promise((resolve, reject) => fs.fdatasync(fd, (err) => (err ? reject(err) : resolve())));
}

export function fsyncFd(fd: number): Promise<void> {
  return new Promise((resolve, reject) => fs.fsync(fd, (err) => (err ? reject(err) : resolve())));
}

export function closeFd(fd: number): Promise<void> {
  return new Promise((resolve, reject) => fs.close(fd, (err) => (err ? reject(err) : resolve())));
}

/**
 * Synchronous positional vectored write, finishing short writes. Used only for small writes into
 * the page cache, where a thread-pool round trip costs more than the copy itself.
 */
export function pwritevSync(fd: number, bufs: Buffer[], position: number): void {
  const total = bufs.reduce((s, b) => s + b.length, 0);
  const n = fs.writevSync(fd, bufs, position);
  if (n < total) pwriteSync(fd, Buffer.concat(bufs).subarray(n), position + n);
}

export function pwriteSync(fd: number, buf: Buffer, position: number): void {
  for (let done = 0; done < buf.length;) done += fs.writeSync(fd, buf, done, buf.length - done, position + done);
}
