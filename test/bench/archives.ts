/**
 * Our zip/tgz readers (src/plugins/loading/archive.ts) against maintained libraries, on the same inputs: a typical
 * GitHub-style plugin archive, a ~20 MB one, and hostile ones. Not a test: it prints a table.
 *
 *   ARCHIVE_BENCH_LIBS=/tmp/libs node --no-node-snapshot dist/test/bench/archives.js [rounds]
 *
 * The libraries are not dependencies of the project: install them into a scratch folder
 * (`npm install --prefix /tmp/libs yauzl fflate adm-zip tar tar-stream`); a reader whose library is missing is
 * skipped. Every (reader, input) pair runs in its own process, so its peak RSS is its own; rounds take turns.
 * Each reader does what `readPluginArchive` does (list, read plugin.json, read its main) with our limits put
 * around it: 64 MB per file, 256 MB of tar stream.
 */
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { createRequire } from 'node:module';
import { Readable, Writable } from 'node:stream';
import zlib from 'node:zlib';
import { openArchive } from '../../src/plugins/loading/archive';

const MAX_FILE = 64 * 1024 * 1024;
const MAX_TAR = 256 * 1024 * 1024;

// ---------------------------------------------------------------------------------------------------- inputs

const GENERATOR = String.raw`
import io, json, os, random, sys, tarfile, zipfile, zlib
out = sys.argv[1]
random.seed(7)
WORDS = 'const event properties return function export await if else plugin meta config => { } ( ) ; \n'.split(' ')
def text(n):
    return ' '.join(random.choice(WORDS) for _ in range(n // 4)).encode()[:n]
def plugin(root, main='index.ts'):
    return {root + 'plugin.json': json.dumps({'name': 'bench', 'main': main}).encode()}

class Zeros(io.RawIOBase):
    def __init__(self, n): self.left = n
    def readable(self): return True
    def readinto(self, b):
        k = min(len(b), self.left); b[:k] = bytes(k); self.left -= k; return k

def write_zip(name, files, bomb=None, symlink=None):
    with zipfile.ZipFile(os.path.join(out, name + '.zip'), 'w', zipfile.ZIP_DEFLATED) as z:
        for n, data in files.items():
            z.writestr(zipfile.ZipInfo(n), data, zipfile.ZIP_DEFLATED)
        if bomb:
            info = zipfile.ZipInfo(bomb[0]); info.compress_type = zipfile.ZIP_DEFLATED
            with z.open(info, 'w', force_zip64=True) as f:
                chunk = bytes(1 << 20)
                for _ in range(bomb[1] >> 20): f.write(chunk)
        if symlink:
            info = zipfile.ZipInfo(symlink[0]); info.create_system = 3; info.external_attr = 0o120777 << 16
            z.writestr(info, symlink[1])

def write_tgz(name, files, bomb=None, symlink=None):
    with tarfile.open(os.path.join(out, name + '.tgz'), 'w:gz', format=tarfile.PAX_FORMAT) as t:
        for n, data in files.items():
            info = tarfile.TarInfo(n); info.size = len(data); t.addfile(info, io.BytesIO(data))
        if bomb:
            info = tarfile.TarInfo(bomb[0]); info.size = bomb[1]; t.addfile(info, io.BufferedReader(Zeros(bomb[1])))
        if symlink:
            info = tarfile.TarInfo(symlink[0]); info.type = tarfile.SYMTYPE; info.linkname = symlink[1]; t.addfile(info)

R = 'posthog-bench-plugin-0123abc/'
typical = {**plugin(R), R + 'index.ts': text(40000), R + 'README.md': text(12000), R + 'package.json': text(800),
           R + 'src/helpers.ts': text(15000), R + 'logo.png': random.randbytes(25000)}
big = {**plugin(R), R + 'index.ts': text(40000)}
for i in range(20): big[R + 'assets/blob-%02d.bin' % i] = random.randbytes(1 << 20)
traversal = {**plugin('p/', 'index.js'), 'p/index.js': b'ok', '../../evil.js': b'evil', 'p/../../../evil2.js': b'evil'}
absolute = {**plugin('', 'index.js'), 'index.js': b'ok', '/tmp/evil.js': b'evil'}
many = {**plugin('p/', 'index.js'), 'p/index.js': b'ok'}
for i in range(100000): many['p/f/%06d.js' % i] = b'x'
for w in (write_zip, write_tgz):
    w('typical', typical)
    w('big-20mb', big)
    w('bomb-1gb', plugin('p/', 'index.js'), bomb=('p/index.js', 1 << 30))
    w('traversal', traversal)
    w('absolute', absolute)
    w('symlink', plugin('p/', 'index.js'), symlink=('p/index.js', '/etc/passwd'))
    w('100k-entries', many)
`;

/** The zip bomb again, its sizes rewritten to 100 bytes: a reader that trusts declared sizes inflates it all. */
function lyingZip(bomb: Buffer): Buffer {
  const b = Buffer.from(bomb);
  const cd = b.lastIndexOf(Buffer.from([0x50, 0x4b, 0x01, 0x02])); // the bomb is the last entry
  const local = b.readUInt32LE(cd + 42);
  const extraLen = b.readUInt16LE(cd + 30);
  const nameLen = b.readUInt16LE(cd + 28);
  // Zip64 extra field: real sizes live there; make the 32-bit fields real and drop the zip64 tag.
  let compressed = b.readUInt32LE(cd + 20);
  const extra = cd + 46 + nameLen;
  for (let e = extra; e < extra + extraLen;) {
    const tag = b.readUInt16LE(e);
    const len = b.readUInt16LE(e + 2);
    if (tag === 1) {
      compressed = Number(b.readBigUInt64LE(e + 12));
      b.writeUInt16LE(0x9999, e); // unknown tag: ignored by readers
    }
    e += 4 + len;
  }
  b.writeUInt32LE(compressed, cd + 20);
  b.writeUInt32LE(100, cd + 24);
  b.writeUInt32LE(compressed, local + 18);
  b.writeUInt32LE(100, local + 22);
  const localExtra = local + 30 + b.readUInt16LE(local + 26);
  for (let e = localExtra; e < localExtra + b.readUInt16LE(local + 28);) {
    if (b.readUInt16LE(e) === 1) b.writeUInt16LE(0x9999, e);
    e += 4 + b.readUInt16LE(e + 2);
  }
  return b;
}

function makeInputs(dir: string): string[] {
  execFileSync('python3', ['-c', GENERATOR, dir]);
  fs.writeFileSync(path.join(dir, 'bomb-lying.zip'), lyingZip(fs.readFileSync(path.join(dir, 'bomb-1gb.zip'))));
  const order = ['typical', 'big-20mb', 'bomb-1gb', 'bomb-lying', 'traversal', 'absolute', 'symlink', '100k-entries'];
  return order.flatMap((n) => ['zip', 'tgz'].map((e) => `${n}.${e}`)).filter((f) => fs.existsSync(path.join(dir, f)));
}

// ---------------------------------------------------------------------------------------------------- readers

/** What every reader returns: the number of files listed and the main file's text. */
interface PluginRead {
  files: number;
  code: string;
}

/** readPluginArchive's choice of root and main, over a listing and a reader of one file. */
async function pickPlugin(paths: string[], read: (p: string) => Promise<Buffer | null>): Promise<PluginRead> {
  const has = new Set(paths);
  let root = '';
  if (!has.has('plugin.json')) {
    const roots = paths.filter((p) => /^[^/]+\/plugin\.json$/.test(p));
    if (roots.length !== 1) throw new Error(`${roots.length} plugin.json files`);
    root = roots[0].slice(0, -'plugin.json'.length);
  }
  const json = JSON.parse(((await read(root + 'plugin.json')) ?? Buffer.alloc(0)).toString('utf8'));
  const main = typeof json.main === 'string' ? json.main : has.has(root + 'index.js') ? 'index.js' : 'index.ts';
  if (main.split('/').includes('..')) throw new Error(`main ${main} is outside the plugin`);
  const code = await read(root + main);
  if (code === null) throw new Error(`main file ${main} not found`);
  return { files: paths.length, code: code.toString('utf8') };
}

function tooLarge(name: string, size: number): void {
  if (size > MAX_FILE) throw new Error(`${name}: file too large (${size} bytes)`);
}

type Reader = (buf: Buffer, lib: NodeJS.Require) => Promise<PluginRead>;

const READERS: Record<string, { kinds: string[]; module?: string; read: Reader }> = {
  ours: {
    kinds: ['zip', 'tgz'],
    read: async (buf) => {
      const archive = openArchive(buf);
      return pickPlugin(archive.paths(), async (p) => archive.read(p));
    },
  },

  yauzl: {
    kinds: ['zip'],
    module: 'yauzl',
    read: async (buf, lib) => {
      interface Entry {
        fileName: string;
        uncompressedSize: number;
      }
      interface ZipFile {
        readEntry(): void;
        on(ev: string, f: (x: Entry & Error) => void): void;
        openReadStream(e: Entry, cb: (err: Error | null, s: Readable) => void): void;
        close(): void;
      }
      const yauzl = lib('yauzl') as {
        fromBuffer(b: Buffer, o: object, cb: (err: Error | null, z: ZipFile) => void): void;
      };
      const zip = await new Promise<ZipFile>((ok, fail) =>
        yauzl.fromBuffer(buf, { lazyEntries: true, autoClose: false }, (err, z) => (err ? fail(err) : ok(z))),
      );
      const entries = new Map<string, Entry>();
      await new Promise<void>((ok, fail) => {
        zip.on('entry', (e) => {
          if (!e.fileName.endsWith('/')) entries.set(e.fileName, e);
          zip.readEntry();
        });
        zip.on('end', () => ok());
        zip.on('error', fail);
        zip.readEntry();
      });
      const read = async (p: string): Promise<Buffer | null> => {
        const e = entries.get(p);
        if (!e) return null;
        tooLarge(p, e.uncompressedSize);
        const stream = await new Promise<Readable>((ok, fail) =>
          zip.openReadStream(e, (err, s) => (err ? fail(err) : ok(s))),
        );
        const chunks: Buffer[] = [];
        for await (const c of stream) chunks.push(c as Buffer);
        return Buffer.concat(chunks);
      };
      try {
        return await pickPlugin([...entries.keys()], read);
      } finally {
        zip.close();
      }
    },
  },

  fflate: {
    kinds: ['zip'],
    module: 'fflate',
    read: async (buf, lib) => {
      interface Info {
        name: string;
        originalSize: number;
      }
      const fflate = lib('fflate') as {
        unzipSync(b: Uint8Array, o: { filter: (f: Info) => boolean }): Record<string, Uint8Array>;
      };
      const paths: string[] = [];
      fflate.unzipSync(buf, { filter: (f) => (f.name.endsWith('/') || paths.push(f.name), false) });
      const read = async (p: string): Promise<Buffer | null> => {
        const out = fflate.unzipSync(buf, { filter: (f) => f.name === p && (tooLarge(p, f.originalSize), true) });
        return out[p] ? Buffer.from(out[p]) : null;
      };
      return pickPlugin(paths, read);
    },
  },

  'adm-zip': {
    kinds: ['zip'],
    module: 'adm-zip',
    read: async (buf, lib) => {
      interface Entry {
        entryName: string;
        isDirectory: boolean;
        header: { size: number };
        getData(): Buffer;
      }
      const AdmZip = lib('adm-zip') as new (b: Buffer) => { getEntries(): Entry[] };
      const entries = new Map(
        new AdmZip(buf)
          .getEntries()
          .filter((e) => !e.isDirectory)
          .map((e) => [e.entryName, e]),
      );
      const read = async (p: string): Promise<Buffer | null> => {
        const e = entries.get(p);
        if (!e) return null;
        tooLarge(p, e.header.size);
        return e.getData();
      };
      return pickPlugin([...entries.keys()], read);
    },
  },

  tar: {
    kinds: ['tgz'],
    module: 'tar',
    read: async (buf, lib) => {
      interface Entry {
        type: string;
        path: string;
        size: number;
        bytes(): Uint8Array;
      }
      const tar = lib('tar') as { entriesSync(b: Uint8Array, o?: object): Iterable<Entry> };
      const files = new Map<string, Buffer>();
      let total = 0;
      for (const e of tar.entriesSync(buf)) {
        total += e.size;
        if (total > MAX_TAR) throw new Error('tar stream too large');
        if (e.type !== 'File' && e.type !== 'ContiguousFile') continue;
        tooLarge(e.path, e.size);
        files.set(e.path, Buffer.from(e.bytes()));
      }
      return pickPlugin([...files.keys()], async (p) => files.get(p) ?? null);
    },
  },

  'tar-stream': {
    kinds: ['tgz'],
    module: 'tar-stream',
    read: async (buf, lib) => {
      interface Header {
        name: string;
        size: number;
        type: string;
      }
      type Extract = Writable & {
        on(ev: 'entry', f: (h: Header, s: Readable, next: (err?: Error) => void) => void): Extract;
      };
      const tarStream = lib('tar-stream') as { extract(): Extract };
      const files = new Map<string, Buffer>();
      let total = 0;
      const extract = tarStream.extract();
      extract.on('entry', (h, stream, next) => {
        const chunks: Buffer[] = [];
        stream.on('data', (c: Buffer) => h.type === 'file' && h.size <= MAX_FILE && chunks.push(c));
        stream.on('end', () => {
          if (h.type === 'file') files.set(h.name, Buffer.concat(chunks));
          next();
        });
      });
      const gunzip = zlib.createGunzip();
      gunzip.on('data', (c: Buffer) => {
        total += c.length;
        if (total > MAX_TAR) gunzip.destroy(new Error('tar stream too large'));
      });
      await new Promise<void>((ok, fail) => {
        extract.on('finish', ok);
        extract.on('error', fail);
        gunzip.on('error', fail);
        Readable.from([buf]).pipe(gunzip).pipe(extract);
      });
      return pickPlugin([...files.keys()], async (p) => files.get(p) ?? null);
    },
  },
};

// ---------------------------------------------------------------------------------------------------- runs

interface Measure {
  ms: number;
  rssMb: number;
  outcome: string;
}

/** One (reader, input) pair in this process: the median of a few reads, peak RSS, what came out. */
async function runOne(readerName: string, file: string, libsDir: string): Promise<Measure> {
  const reader = READERS[readerName];
  const lib = createRequire(path.join(libsDir, 'node_modules', 'x.js'));
  const buf = fs.readFileSync(file);
  const times: number[] = [];
  let outcome = '';
  const repeat = buf.length < 1024 * 1024 ? 20 : 3;
  for (let i = 0; i < repeat; i++) {
    const t0 = process.hrtime.bigint();
    try {
      const r = await reader.read(buf, lib);
      outcome = `ok: main ${r.code.length} chars, ${r.files} files`;
    } catch (err) {
      outcome = `refused: ${(err as Error).message.replace(/\s+/g, ' ').slice(0, 70)}`;
    }
    times.push(Number(process.hrtime.bigint() - t0) / 1e6);
    if (Number(process.hrtime.bigint() - t0) > 5e9) break; // one slow read is enough
  }
  times.sort((a, b) => a - b);
  return { ms: times[Math.floor(times.length / 2)], rssMb: process.resourceUsage().maxRSS / 1024, outcome };
}

function measureInChild(reader: string, file: string, libsDir: string): Measure {
  const args = ['--no-node-snapshot', __filename, '--one', reader, file, libsDir];
  try {
    return JSON.parse(execFileSync(process.execPath, args, { timeout: 300_000, stdio: 'pipe' }).toString()) as Measure;
  } catch (err) {
    const why = (err as { stderr?: Buffer }).stderr
      ?.toString()
      .split('\n')
      .find((l) => /Error|fatal/i.test(l));
    return { ms: NaN, rssMb: NaN, outcome: `crashed: ${(why ?? (err as Error).message).slice(0, 70)}` };
  }
}

function available(libsDir: string | undefined): string[] {
  return Object.entries(READERS)
    .filter(([, r]) => {
      if (!r.module) return true;
      if (!libsDir) return false;
      try {
        createRequire(path.join(libsDir, 'node_modules', 'x.js')).resolve(r.module);
        return true;
      } catch {
        return false;
      }
    })
    .map(([name]) => name);
}

async function main(): Promise<void> {
  if (process.argv[2] === '--one') {
    const m = await runOne(process.argv[3], process.argv[4], process.argv[5]);
    process.stdout.write(JSON.stringify(m));
    return;
  }
  const rounds = Number(process.argv[2] ?? 2);
  const libsDir = process.env.ARCHIVE_BENCH_LIBS ?? '';
  const readers = available(libsDir || undefined);
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'archive-bench-'));
  try {
    const inputs = makeInputs(dir);
    const results = new Map<string, Measure[]>();
    for (let round = 0; round < rounds; round++) {
      for (const input of inputs) {
        const kind = input.endsWith('.zip') ? 'zip' : 'tgz';
        const turn = readers.filter((r) => READERS[r].kinds.includes(kind));
        if (round % 2 === 1) turn.reverse();
        for (const r of turn) {
          const key = `${input}\t${r}`;
          results.set(key, [...(results.get(key) ?? []), measureInChild(r, path.join(dir, input), libsDir)]);
        }
      }
    }
    const mb = (f: string): string => (fs.statSync(path.join(dir, f)).size / 1024 / 1024).toFixed(2);
    console.log(`| input (archive MB) | reader | ms, median per round | peak RSS MB per round | outcome |`);
    console.log(`|---|---|--:|--:|---|`);
    for (const [key, ms] of results) {
      const [input, r] = key.split('\t');
      const times = ms.map((m) => (m.ms < 10 ? m.ms.toFixed(2) : m.ms.toFixed(0))).join(' / ');
      const rss = ms.map((m) => m.rssMb.toFixed(0)).join(' / ');
      console.log(`| ${input} (${mb(input)}) | ${r} | ${times} | ${rss} | ${ms[ms.length - 1].outcome} |`);
    }
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
