import dns from 'node:dns';

/**
 * Which addresses plugin `fetch` may connect to. Addresses are parsed here (every spelling the WHATWG URL parser,
 * inet_aton or getaddrinfo accept: 127.1, 0x7f000001, 2130706433, 0177.0.0.1, [::ffff:127.0.0.1], …) into a
 * number, classified by range, and formatted back: the request then connects to that formatted address, so the
 * address that was checked is the address that is used (no second DNS lookup, no re-parsing by someone else).
 */

export interface ParsedIp {
  family: 4 | 6;
  /** 32-bit (v4) or 128-bit (v6) value. */
  value: bigint;
}

export interface ResolvedTarget {
  /** Canonical address to connect to (dotted IPv4, or 8 uncompressed IPv6 groups). */
  address: string;
  family: 4 | 6;
}

export type LookupFn = (hostname: string) => Promise<Array<{ address: string; family: number }>>;

/** The host may not be reached (the message says why; shown to the plugin as a rejected fetch). */
export class FetchRefusedError extends Error {
  override name = 'FetchRefusedError';
}

// ------------------------------------------------------------------------------------------------ parsing

const V4_MAX = (1n << 32n) - 1n;

/** One IPv4 part as inet_aton / the WHATWG URL parser read it: 0x.. hex, 0.. octal, else decimal. */
function v4Part(part: string): bigint | null {
  let digits = part;
  let radix = 10;
  if (/^0x/i.test(part)) {
    digits = part.slice(2);
    radix = 16;
    if (digits === '') return 0n; // "0x" is 0 for the URL parser
  } else if (part.length > 1 && part[0] === '0') {
    digits = part.slice(1);
    radix = 8;
  }
  const re = radix === 16 ? /^[0-9a-f]+$/i : radix === 8 ? /^[0-7]+$/ : /^[0-9]+$/;
  if (!re.test(digits) || digits.length > 40) return null;
  let v = 0n;
  for (const ch of digits.toLowerCase()) v = v * BigInt(radix) + BigInt(parseInt(ch, 16));
  return v;
}

/** IPv4 in any inet_aton form: 1 to 4 parts, the last one filling the remaining bytes; one trailing dot allowed. */
export function parseIPv4(input: string): bigint | null {
  const parts = input.split('.');
  if (parts.length > 1 && parts[parts.length - 1] === '') parts.pop();
  if (parts.length === 0 || parts.length > 4) return null;
  const nums: bigint[] = [];
  for (const p of parts) {
    if (p === '') return null;
    const v = v4Part(p);
    if (v === null) return null;
    nums.push(v);
  }
  const last = nums[nums.length - 1];
  if (last >= 1n << BigInt(8 * (5 - nums.length))) return null;
  let value = 0n;
  for (let i = 0; i < nums.length - 1; i++) {
    if (nums[i] > 255n) return null;
    value |= nums[i] << BigInt(8 * (3 - i));
  }
  value |= last;
  return value <= V4_MAX ? value : null;
}

/** IPv6 text (brackets and a %zone allowed; an IPv4 tail in dotted form allowed). */
export function parseIPv6(input: string): bigint | null {
  let s = input;
  if (s.startsWith('[') && s.endsWith(']')) s = s.slice(1, -1);
  const zone = s.indexOf('%');
  if (zone >= 0) s = s.slice(0, zone);
  if (s === '' || !/^[0-9a-f:.]+$/i.test(s)) return null;
  const halves = s.split('::');
  if (halves.length > 2) return null;
  const groupsOf = (part: string): number[] | null => {
    if (part === '') return [];
    const out: number[] = [];
    const items = part.split(':');
    for (let i = 0; i < items.length; i++) {
      const it = items[i];
      if (i === items.length - 1 && it.includes('.')) {
        // dotted IPv4 tail: four decimal parts only (as inet_pton)
        const q = it.split('.');
        if (q.length !== 4 || q.some((x) => !/^[0-9]{1,3}$/.test(x) || Number(x) > 255)) return null;
        out.push(Number(q[0]) * 256 + Number(q[1]), Number(q[2]) * 256 + Number(q[3]));
      } else {
        if (!/^[0-9a-f]{1,4}$/i.test(it)) return null;
        out.push(parseInt(it, 16));
      }
    }
    return out;
  };
  const head = groupsOf(halves[0]);
  const tail = halves.length === 2 ? groupsOf(halves[1]) : [];
  if (!head || !tail) return null;
  let groups: number[];
  if (halves.length === 2) {
    const missing = 8 - head.length - tail.length;
    if (missing < 1) return null;
    groups = [...head, ...new Array<number>(missing).fill(0), ...tail];
  } else {
    groups = head;
  }
  if (groups.length !== 8) return null;
  let v = 0n;
  for (const g of groups) v = (v << 16n) | BigInt(g);
  return v;
}

/** A host as an IP address, or null when it is a name. IPv4-mapped IPv6 (::ffff:a.b.c.d) becomes IPv4. */
export function parseIp(host: string): ParsedIp | null {
  const h = host.trim().toLowerCase();
  if (h.includes(':') || h.startsWith('[')) {
    const v = parseIPv6(h);
    if (v === null) return null;
    if (v >> 32n === 0xffffn) return { family: 4, value: v & V4_MAX };
    return { family: 6, value: v };
  }
  const v4 = parseIPv4(h);
  return v4 === null ? null : { family: 4, value: v4 };
}

export function formatIp(ip: ParsedIp): string {
  if (ip.family === 4) {
    const v = Number(ip.value);
    return [v >>> 24, (v >>> 16) & 255, (v >>> 8) & 255, v & 255].join('.');
  }
  const groups: string[] = [];
  for (let i = 7; i >= 0; i--) groups.push(((ip.value >> BigInt(16 * i)) & 0xffffn).toString(16));
  return groups.join(':');
}

// ------------------------------------------------------------------------------------------------ ranges

interface Cidr {
  family: 4 | 6;
  base: bigint;
  bits: number;
}

export function parseCidr(text: string): Cidr | null {
  const slash = text.lastIndexOf('/');
  const ipText = slash >= 0 ? text.slice(0, slash) : text;
  const ip = parseIp(ipText);
  if (!ip) return null;
  const max = ip.family === 4 ? 32 : 128;
  let bits = max;
  if (slash >= 0) {
    const b = text.slice(slash + 1);
    if (!/^[0-9]{1,3}$/.test(b)) return null;
    bits = Number(b);
    // an IPv4-mapped prefix (::ffff:10.0.0.0/104) becomes its IPv4 prefix
    if (ip.family === 4 && ipText.includes(':')) bits -= 96;
    if (bits < 0 || bits > max) return null;
  }
  return { family: ip.family, base: maskOf(ip.value, bits, max), bits };
}

function maskOf(v: bigint, bits: number, max: number): bigint {
  const hostBits = BigInt(max - bits);
  return (v >> hostBits) << hostBits;
}

function inCidr(ip: ParsedIp, c: Cidr): boolean {
  if (ip.family !== c.family) return false;
  return maskOf(ip.value, c.bits, c.family === 4 ? 32 : 128) === c.base;
}

function cidr(text: string): Cidr {
  const c = parseCidr(text);
  if (!c) throw new Error(`bad built-in range ${text}`);
  return c;
}

/** Most specific first: the first match names the range. */
const V4_BLOCKED: Array<[Cidr, string]> = [
  ['169.254.169.254/32', 'cloud metadata address'],
  ['169.254.170.2/32', 'cloud metadata address (ECS)'],
  ['100.100.100.200/32', 'cloud metadata address (Alibaba)'],
  ['192.0.0.192/32', 'cloud metadata address (Oracle)'],
  ['0.0.0.0/8', '"this network" address'],
  ['10.0.0.0/8', 'private network address'],
  ['100.64.0.0/10', 'shared address space (carrier-grade NAT)'],
  ['127.0.0.0/8', 'loopback address'],
  ['169.254.0.0/16', 'link-local address'],
  ['172.16.0.0/12', 'private network address'],
  ['192.0.0.0/24', 'IETF protocol assignment'],
  ['192.0.2.0/24', 'documentation range'],
  ['192.88.99.0/24', '6to4 relay anycast'],
  ['192.168.0.0/16', 'private network address'],
  ['198.18.0.0/15', 'benchmarking range'],
  ['198.51.100.0/24', 'documentation range'],
  ['203.0.113.0/24', 'documentation range'],
  ['224.0.0.0/4', 'multicast address'],
  ['240.0.0.0/4', 'reserved address'],
].map(([c, why]) => [cidr(c), why]);

const V6_BLOCKED: Array<[Cidr, string]> = [
  ['fd00:ec2::254/128', 'cloud metadata address'],
  ['::/128', 'unspecified address'],
  ['::1/128', 'loopback address'],
  ['::/96', 'IPv4-compatible address'],
  ['64:ff9b:1::/48', 'local-use NAT64 range'],
  ['100::/64', 'discard-only range'],
  ['2001::/32', 'Teredo range'],
  ['2001:2::/48', 'benchmarking range'],
  ['2001:10::/28', 'ORCHID range'],
  ['2001:20::/28', 'ORCHID range'],
  ['2001:db8::/32', 'documentation range'],
  ['fc00::/7', 'unique-local (private) address'],
  ['fe80::/10', 'link-local address'],
  ['fec0::/10', 'site-local address'],
  ['ff00::/8', 'multicast address'],
].map(([c, why]) => [cidr(c), why]);

/** Ranges whose addresses carry an IPv4 address: checked as that IPv4 address too. */
const V6_EMBEDDING_V4: Array<[Cidr, (v: bigint) => bigint]> = [
  [cidr('64:ff9b::/96'), (v) => v & V4_MAX], // NAT64 (well-known prefix)
  [cidr('::ffff:0:0:0/96'), (v) => v & V4_MAX], // IPv4-translated
  [cidr('2002::/16'), (v) => (v >> 80n) & V4_MAX], // 6to4
];
const GLOBAL_UNICAST = cidr('2000::/3');

/**
 * Why an address is not reachable from plugins, or null when it is a public address. Blocks loopback, private,
 * link-local, shared (CGNAT), metadata, multicast, documentation, benchmarking and reserved ranges of both
 * families; IPv6 forms that carry an IPv4 address (mapped, translated, NAT64, 6to4) are judged by that address;
 * IPv6 outside 2000::/3 is blocked.
 */
export function blockedReason(ip: ParsedIp): string | null {
  if (ip.family === 4) {
    for (const [c, why] of V4_BLOCKED) if (inCidr(ip, c)) return why;
    return null;
  }
  for (const [c, why] of V6_BLOCKED) if (inCidr(ip, c)) return why;
  for (const [c, embedded] of V6_EMBEDDING_V4) {
    if (inCidr(ip, c)) {
      const inner = blockedReason({ family: 4, value: embedded(ip.value) });
      return inner === null ? null : `${inner} (embedded in IPv6)`;
    }
  }
  if (!inCidr(ip, GLOBAL_UNICAST)) return 'reserved IPv6 address';
  return null;
}

/** Names refused before any DNS lookup (their addresses would be refused too; this gives a clearer message). */
const BLOCKED_NAMES = new Set([
  'localhost',
  'localhost.localdomain',
  'ip6-localhost',
  'ip6-loopback',
  'metadata',
  'metadata.google.internal',
  'metadata.goog',
  'instance-data',
  'instance-data.ec2.internal',
]);

function normalizeName(host: string): string {
  let h = host.trim().toLowerCase();
  if (h.startsWith('[') && h.endsWith(']')) h = h.slice(1, -1);
  while (h.endsWith('.')) h = h.slice(0, -1);
  return h;
}

export function blockedName(host: string): string | null {
  const h = normalizeName(host);
  if (BLOCKED_NAMES.has(h))
    return h.startsWith('metadata') || h.startsWith('instance-data')
      ? 'cloud metadata host name'
      : 'loopback host name';
  if (h.endsWith('.localhost')) return 'loopback host name';
  return null;
}

// ------------------------------------------------------------------------------------------------ allow-list

export interface AllowList {
  cidrs: Cidr[];
  /** Exact host names (lower case, no trailing dot). */
  names: Set<string>;
  /** Suffixes from "*.example.com" / ".example.com" entries (stored as ".example.com"). */
  suffixes: string[];
  /** The entries as given, for messages. */
  entries: string[];
}

const NAME_RE = /^[a-z0-9_]([a-z0-9_-]{0,62})(\.[a-z0-9_]([a-z0-9_-]{0,62}))*$/;

/**
 * "--fetch-allow" / PLUGIN_FETCH_ALLOW: comma-separated host names ("localhost", "*.corp.example"), IP addresses
 * and CIDR ranges ("127.0.0.1", "10.0.0.0/8", "::1", "fd00::/8"). Throws on an entry it cannot read.
 */
export function parseAllowList(spec: string | readonly string[] | undefined): AllowList {
  const raw = spec === undefined ? [] : typeof spec === 'string' ? spec.split(',') : [...spec];
  const list: AllowList = { cidrs: [], names: new Set(), suffixes: [], entries: [] };
  for (const r of raw) {
    const e = r.trim();
    if (e === '') continue;
    list.entries.push(e);
    const c = parseCidr(e.toLowerCase());
    if (c) {
      list.cidrs.push(c);
      continue;
    }
    const lower = e.toLowerCase();
    const wildcard = lower.startsWith('*.') ? lower.slice(1) : lower.startsWith('.') ? lower : null;
    const name = normalizeName(wildcard !== null ? wildcard.slice(1) : lower);
    if (!NAME_RE.test(name) || /^[0-9.]+$/.test(name))
      throw new Error(
        `fetch allow-list: cannot read entry ${JSON.stringify(e)} (expected a host name, *.domain, an IP address or a CIDR range)`,
      );
    if (wildcard !== null) list.suffixes.push('.' + name);
    else list.names.add(name);
  }
  return list;
}

export function nameAllowed(list: AllowList, host: string): boolean {
  const h = normalizeName(host);
  if (list.names.has(h)) return true;
  return list.suffixes.some((s) => h.endsWith(s));
}

export function ipAllowed(list: AllowList, ip: ParsedIp): boolean {
  return list.cidrs.some((c) => inCidr(ip, c));
}

// ------------------------------------------------------------------------------------------------ guard

export const systemLookup: LookupFn = (hostname) => dns.promises.lookup(hostname, { all: true, verbatim: true });

/**
 * Decides where a plugin request may go. `resolve(hostname)` returns the one address to connect to, or throws
 * FetchRefusedError. A host name on the allow-list is trusted with whatever it resolves to; otherwise every
 * address is checked and the first allowed one is used (an IP literal is checked as it is).
 */
export class NetGuard {
  readonly allow: AllowList;

  constructor(
    allow: string | readonly string[] | AllowList | undefined,
    private readonly lookup: LookupFn = systemLookup,
  ) {
    this.allow =
      allow !== undefined && typeof allow === 'object' && 'cidrs' in allow
        ? allow
        : parseAllowList(allow as string | readonly string[] | undefined);
  }

  /** Why this address may not be used (null = it may). */
  checkIp(ip: ParsedIp): string | null {
    if (ipAllowed(this.allow, ip)) return null;
    return blockedReason(ip);
  }

  async resolve(hostname: string): Promise<ResolvedTarget> {
    const host = normalizeName(hostname);
    if (host === '') throw new FetchRefusedError('empty host name');
    const literal = parseIp(host);
    if (literal) {
      const why = this.checkIp(literal);
      if (why) throw new FetchRefusedError(`${formatIp(literal)} is not allowed (${why})`);
      return { address: formatIp(literal), family: literal.family };
    }
    const trusted = nameAllowed(this.allow, host);
    // localhost, metadata.google.internal, …: refused without a DNS query, unless the operator allow-listed the
    // address they resolve to (then only allow-listed addresses of theirs are used).
    const nameBlocked = trusted ? null : blockedName(host);
    if (nameBlocked && this.allow.cidrs.length === 0)
      throw new FetchRefusedError(`${host} is not allowed (${nameBlocked})`);
    let addrs: Array<{ address: string; family: number }>;
    try {
      addrs = await this.lookup(host);
    } catch (err) {
      const code = (err as { code?: string }).code;
      throw Object.assign(new Error(`cannot resolve ${host}${code ? ` (${code})` : ''}`), {
        code: code ?? 'ENOTFOUND',
      });
    }
    let firstWhy: string | null = null;
    for (const a of addrs) {
      const ip = parseIp(a.address);
      if (!ip) continue;
      const why = trusted ? null : nameBlocked ? (ipAllowed(this.allow, ip) ? null : nameBlocked) : this.checkIp(ip);
      if (why === null) return { address: formatIp(ip), family: ip.family };
      firstWhy ??= nameBlocked
        ? `${host} is not allowed (${nameBlocked})`
        : `${host} resolves to ${formatIp(ip)}, which is not allowed (${why})`;
    }
    throw new FetchRefusedError(firstWhy ?? `cannot resolve ${host} (no usable address)`);
  }
}
