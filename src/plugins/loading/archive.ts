import zlib from 'node:zlib';

/**
 * Minimal readers for the two archive formats PostHog stores in `posthog_plugin.archive` (GitHub/GitLab zipballs,
 * npm/GitHub tarballs). Files are listed eagerly and decompressed lazily, each as one Buffer, so multi-byte UTF-8
 * is decoded only once the whole file is in memory (PostHog's tgz reader could split a character, bug B16).
 *
 * Limits: a file may decompress to `maxFileBytes` (a zip entry also to no more than its declared size), a tar
 * stream to `maxTarBytes`; both are enforced by zlib while inflating, never after. Zip64, encrypted entries and
 * methods other than stored/deflate are refused (so a zip holds at most 65,535 entries). Tar links, devices and
 * directories are skipped; a zip symlink reads as a file holding its target's path. Nothing is written to disk, so
 * "../" and absolute names are only map keys (leading "/" stripped); source.ts refuses a `main` with "..".
 *
 * Hand-written on purpose: measured against yauzl, fflate, adm-zip, tar and tar-stream (test/bench/archives.ts,
 * docs/performance.md "2026-12-08: archive readers"), ours was the fastest on plugin-sized and 20 MB archives and
 * has no dependency. The libraries that read synchronously, as our callers do, fall short on limits: fflate
 * inflates a zip bomb whose sizes lie to its end (3 s, then a silently truncated file), tar's sync reader gunzips a
 * 1 GB bomb whole (1.1 GB RSS) before its ratio check, adm-zip takes 4 s and 2 GB on 100k entries. yauzl and
 * tar-stream would make every caller async, for 3-5× the time.
 */
export type ArchiveKind = 'zip' | 'tgz' | 'tar';

export interface ArchiveLimits {
  /** Largest single decompressed file (default 64 MB). */
  maxFileBytes: number;
  /** Largest decompressed tar stream (default 256 MB). */
  maxTarBytes: number;
}

const DEFAULT_ARCHIVE_LIMITS: ArchiveLimits = { maxFileBytes: 64 * 1024 * 1024, maxTarBytes: 256 * 1024 * 1024 };

export class ArchiveError extends Error {
  override name = 'ArchiveError';
}

export interface Archive {
  kind: ArchiveKind;
  /** Normalised file paths (no leading "./", "/" separators), directories excluded. */
  paths(): string[];
  has(path: string): boolean;
  /** Decompressed bytes of one file, or null when absent. */
  read(path: string): Buffer | null;
}

/** zip: "PK\3\4" (or "PK\5\6" for an empty one); gzip: 1f 8b; plain tar: "ustar" at offset 257. */
export function sniffArchive(buf: Buffer): ArchiveKind | null {
  if (
    buf.length >= 4 &&
    buf[0] === 0x50 &&
    buf[1] === 0x4b &&
    (buf[2] === 3 || buf[2] === 5) &&
    (buf[3] === 4 || buf[3] === 6)
  ) {
    return 'zip';
  }
  if (buf.length >= 2 && buf[0] === 0x1f && buf[1] === 0x8b) return 'tgz';
  if (buf.length >= 262 && buf.toString('latin1', 257, 262) === 'ustar') return 'tar';
  return null;
}

export function openArchive(buf: Buffer, limits: Partial<ArchiveLimits> = {}): Archive {
  const l = { ...DEFAULT_ARCHIVE_LIMITS, ...limits };
  const kind = sniffArchive(buf);
  if (kind === 'zip') return readZip(buf, l);
  if (kind === 'tgz') {
    let tar: Buffer;
    try {
      tar = zlib.gunzipSync(buf, { maxOutputLength: l.maxTarBytes });
    } catch (err) {
      throw new ArchiveError(`cannot decompress gzip archive: ${(err as Error).message}`);
    }
    return readTar(tar, 'tgz', l);
  }
  if (kind === 'tar') return readTar(buf, 'tar', l);
  throw new ArchiveError('unknown archive format (expected zip or tar.gz)');
}

export function normalizeArchivePath(p: string): string {
  let s = p.replace(/\\/g, '/');
  while (s.startsWith('./')) s = s.slice(2);
  s = s.replace(/^\/+/, '').replace(/\/{2,}/g, '/');
  return s;
}

class MapArchive implements Archive {
  constructor(
    readonly kind: ArchiveKind,
    private readonly files: Map<string, () => Buffer>,
  ) {}
  paths(): string[] {
    return [...this.files.keys()];
  }
  has(path: string): boolean {
    return this.files.has(normalizeArchivePath(path));
  }
  read(path: string): Buffer | null {
    const f = this.files.get(normalizeArchivePath(path));
    return f ? f() : null;
  }
}

// ---------------------------------------------------------------------------------------------------- zip

function readZip(buf: Buffer, limits: ArchiveLimits): Archive {
  // End of central directory: 22 bytes + up to 65535 bytes of comment, searched backwards.
  const minEocd = Math.max(0, buf.length - 22 - 0xffff);
  let eocd = -1;
  for (let i = buf.length - 22; i >= minEocd; i--) {
    if (buf.readUInt32LE(i) === 0x06054b50) {
      eocd = i;
      break;
    }
  }
  if (eocd < 0) throw new ArchiveError('corrupt zip archive: end of central directory not found');
  const count = buf.readUInt16LE(eocd + 10);
  const cdSize = buf.readUInt32LE(eocd + 12);
  const cdOffset = buf.readUInt32LE(eocd + 16);
  if (count === 0xffff || cdOffset === 0xffffffff || cdSize === 0xffffffff) {
    throw new ArchiveError('zip64 archives are not supported');
  }
  if (cdOffset + cdSize > buf.length) throw new ArchiveError('corrupt zip archive: central directory out of bounds');

  const files = new Map<string, () => Buffer>();
  let p = cdOffset;
  for (let n = 0; n < count; n++) {
    if (p + 46 > buf.length || buf.readUInt32LE(p) !== 0x02014b50) {
      throw new ArchiveError('corrupt zip archive: bad central directory entry');
    }
    const flags = buf.readUInt16LE(p + 8);
    const method = buf.readUInt16LE(p + 10);
    const compressedSize = buf.readUInt32LE(p + 20);
    const size = buf.readUInt32LE(p + 24);
    const nameLen = buf.readUInt16LE(p + 28);
    const extraLen = buf.readUInt16LE(p + 30);
    const commentLen = buf.readUInt16LE(p + 32);
    const localOffset = buf.readUInt32LE(p + 42);
    // Bit 11 says UTF-8; tools that don't set it write UTF-8 anyway nowadays, so decode UTF-8 either way.
    const name = normalizeArchivePath(buf.toString('utf8', p + 46, p + 46 + nameLen));
    p += 46 + nameLen + extraLen + commentLen;
    if (name === '' || name.endsWith('/')) continue;
    files.set(name, () => {
      if (flags & 1) throw new ArchiveError(`${name}: encrypted zip entries are not supported`);
      if (size > limits.maxFileBytes) throw new ArchiveError(`${name}: file too large (${size} bytes)`);
      if (localOffset + 30 > buf.length || buf.readUInt32LE(localOffset) !== 0x04034b50) {
        throw new ArchiveError(`corrupt zip archive: bad local header for ${name}`);
      }
      const start = localOffset + 30 + buf.readUInt16LE(localOffset + 26) + buf.readUInt16LE(localOffset + 28);
      const data = buf.subarray(start, start + compressedSize);
      if (data.length !== compressedSize) throw new ArchiveError(`corrupt zip archive: truncated data for ${name}`);
      let out: Buffer;
      if (method === 0) out = Buffer.from(data);
      else if (method === 8) {
        try {
          // Capped at the declared size (already within the limit), so a bomb whose sizes lie stops there.
          out = zlib.inflateRawSync(data, { maxOutputLength: Math.max(1, size) });
        } catch (err) {
          throw new ArchiveError(`cannot inflate ${name}: ${(err as Error).message}`);
        }
      } else throw new ArchiveError(`${name}: unsupported zip compression method ${method}`);
      if (out.length !== size) {
        throw new ArchiveError(`corrupt zip archive: ${name} holds ${out.length} bytes, its header says ${size}`);
      }
      return out;
    });
  }
  return new MapArchive('zip', files);
}

// ---------------------------------------------------------------------------------------------------- tar

function cString(buf: Buffer, start: number, len: number): string {
  const field = buf.subarray(start, start + len);
  const nul = field.indexOf(0);
  return field.toString('utf8', 0, nul < 0 ? field.length : nul);
}

function tarNumber(buf: Buffer, start: number, len: number): number {
  if (buf[start] & 0x80) {
    // base-256 (GNU): big-endian, first byte's top bit is the marker
    let v = buf[start] & 0x7f;
    for (let i = 1; i < len; i++) v = v * 256 + buf[start + i];
    return v;
  }
  const s = buf
    .toString('latin1', start, start + len)
    .replace(/[\0 ]+.*$/s, '')
    .trim();
  if (s === '') return 0;
  const v = parseInt(s, 8);
  if (!Number.isFinite(v)) throw new ArchiveError('corrupt tar archive: bad number field');
  return v;
}

function parsePax(data: Buffer): Record<string, string> {
  const out: Record<string, string> = {};
  let p = 0;
  while (p < data.length) {
    const sp = data.indexOf(0x20, p);
    if (sp < 0) break;
    const len = parseInt(data.toString('latin1', p, sp), 10);
    if (!Number.isFinite(len) || len <= 0) break;
    const record = data.toString('utf8', sp + 1, p + len - 1); // without the trailing "\n"
    const eq = record.indexOf('=');
    if (eq > 0) out[record.slice(0, eq)] = record.slice(eq + 1);
    p += len;
  }
  return out;
}

function readTar(buf: Buffer, kind: ArchiveKind, limits: ArchiveLimits): Archive {
  const files = new Map<string, () => Buffer>();
  let p = 0;
  let longName: string | null = null;
  let pax: Record<string, string> = {};
  while (p + 512 <= buf.length) {
    const header = buf.subarray(p, p + 512);
    if (header.every((b) => b === 0)) break; // end of archive
    const size = tarNumber(header, 124, 12);
    const type = String.fromCharCode(header[156] || 0x30);
    const dataStart = p + 512;
    const dataEnd = dataStart + size;
    if (dataEnd > buf.length) throw new ArchiveError('corrupt tar archive: truncated entry');
    p = dataStart + Math.ceil(size / 512) * 512;

    if (type === 'L') {
      longName = cString(buf, dataStart, size);
      continue;
    }
    if (type === 'x') {
      pax = parsePax(buf.subarray(dataStart, dataEnd));
      continue;
    }
    if (type === 'g') continue; // global pax header (GitHub's pax_global_header holds the commit id)

    let name = cString(header, 0, 100);
    if (header.toString('latin1', 257, 262) === 'ustar') {
      const prefix = cString(header, 345, 155);
      if (prefix) name = `${prefix}/${name}`;
    }
    if (longName !== null) name = longName;
    if (pax.path) name = pax.path;
    longName = null;
    pax = {};

    if (type !== '0' && type !== '7') continue; // only regular files
    const path = normalizeArchivePath(name);
    if (path === '' || path.endsWith('/')) continue;
    if (size > limits.maxFileBytes) {
      files.set(path, () => {
        throw new ArchiveError(`${path}: file too large (${size} bytes)`);
      });
      continue;
    }
    files.set(path, () => Buffer.from(buf.subarray(dataStart, dataEnd)));
  }
  return new MapArchive(kind, files);
}
