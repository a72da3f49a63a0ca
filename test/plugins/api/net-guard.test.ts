import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import {
  blockedName,
  blockedReason,
  FetchRefusedError,
  formatIp,
  NetGuard,
  parseAllowList,
  parseIp,
} from '../../../src/plugins/api/net-guard';

/**
 * The address check, on its own: no packet is sent by this file. Private, link-local and metadata ranges are
 * proven blocked here (and only here); the fetch tests only ever send traffic to loopback.
 */

function reason(host: string, allow?: string): string | null {
  const ip = parseIp(host);
  assert.ok(ip, `${host} should parse as an IP address`);
  return allow === undefined ? blockedReason(ip) : new NetGuard(allow).checkIp(ip);
}

describe('net-guard: parsing every spelling', () => {
  const LOOPBACK_V4 = [
    '127.0.0.1',
    '127.1', // a.b: last part fills 3 bytes
    '127.0.1', // a.b.c
    '2130706433', // one 32-bit number
    '0x7f000001',
    '0X7F000001',
    '0x7f.1',
    '0x7F.0.0.1',
    '0177.0.0.1', // octal
    '0177.0.0.01',
    '017700000001', // octal 32-bit
    '127.0.0.1.', // trailing dot
    '127.000.000.001',
    '127.255.255.254',
  ];
  for (const s of LOOPBACK_V4) {
    it(`IPv4 loopback spelled ${JSON.stringify(s)}`, () => {
      const ip = parseIp(s);
      assert.equal(ip?.family, 4);
      assert.match(formatIp(ip!), /^127\./);
      assert.equal(blockedReason(ip!), 'loopback address');
    });
  }

  const LOOPBACK_V6 = [
    '::1',
    '[::1]',
    '0:0:0:0:0:0:0:1',
    '0000:0000:0000:0000:0000:0000:0000:0001',
    '::0:1',
    '::1%lo',
    '[::1%25lo]',
  ];
  for (const s of LOOPBACK_V6) {
    it(`IPv6 loopback spelled ${JSON.stringify(s)}`, () => {
      const ip = parseIp(s);
      assert.equal(ip?.family, 6);
      assert.equal(formatIp(ip!), '0:0:0:0:0:0:0:1');
      assert.equal(blockedReason(ip!), 'loopback address');
    });
  }

  const MAPPED = [
    '::ffff:127.0.0.1',
    '[::ffff:127.0.0.1]',
    '::ffff:7f00:1',
    '0:0:0:0:0:ffff:7f00:0001',
    '::FFFF:127.0.0.1',
    '::ffff:127.1.2.3',
  ];
  for (const s of MAPPED) {
    it(`IPv4-mapped IPv6 ${JSON.stringify(s)} is checked (and connected to) as the IPv4 address`, () => {
      const ip = parseIp(s);
      assert.equal(ip?.family, 4);
      assert.match(formatIp(ip!), /^127\./);
      assert.equal(blockedReason(ip!), 'loopback address');
    });
  }

  it('the URL parser normalizes spellings the same way (and NetGuard agrees on what it produces)', () => {
    for (const s of ['127.1', '0x7f000001', '2130706433', '0177.0.0.1', '0x7f.1', '127.0.0.1.']) {
      const host = new URL(`http://${s}:8080/`).hostname;
      assert.equal(host, '127.0.0.1', s);
      assert.equal(reason(host), 'loopback address');
    }
    assert.equal(new URL('http://[::ffff:127.0.0.1]/').hostname, '[::ffff:7f00:1]');
    assert.equal(reason(new URL('http://[::ffff:127.0.0.1]/').hostname), 'loopback address');
    assert.equal(reason(new URL('http://[0:0::1]/').hostname), 'loopback address');
  });

  it('non-addresses are names, not IPs', () => {
    for (const s of [
      'example.com',
      '127.0.0.1.nip.io',
      '1.2.3.4.5',
      '256.1.1.1',
      '1.2.3.0400',
      '0x1g.1',
      '',
      '::1::',
      '1:2:3:4:5:6:7:8:9',
      '12345::',
      'fe80::1::2',
      '[::1',
      '08.0.0.1',
      '::ffff:1.2.3',
    ]) {
      assert.equal(parseIp(s), null, s);
    }
    // 4294967295 is the largest single-number IPv4; one more is a name
    assert.equal(formatIp(parseIp('4294967295')!), '255.255.255.255');
    assert.equal(parseIp('4294967296'), null);
  });

  it('formatIp round-trips', () => {
    for (const s of ['8.8.8.8', '0.0.0.0', '255.255.255.255']) assert.equal(formatIp(parseIp(s)!), s);
    assert.equal(formatIp(parseIp('2001:db8::1')!), '2001:db8:0:0:0:0:0:1');
    assert.equal(formatIp(parseIp('::')!), '0:0:0:0:0:0:0:0');
  });
});

describe('net-guard: ranges', () => {
  const BLOCKED: Array<[string, RegExp]> = [
    ['0.0.0.0', /this network/],
    ['0.255.255.255', /this network/],
    ['10.0.0.0', /private/],
    ['10.255.255.255', /private/],
    ['172.16.0.0', /private/],
    ['172.31.255.255', /private/],
    ['192.168.0.1', /private/],
    ['192.168.255.255', /private/],
    ['100.64.0.0', /carrier-grade NAT/],
    ['100.127.255.255', /carrier-grade NAT/],
    ['127.0.0.0', /loopback/],
    ['169.254.0.1', /link-local/],
    ['169.254.255.255', /link-local/],
    ['169.254.169.254', /metadata/],
    ['169.254.170.2', /metadata/],
    ['100.100.100.200', /metadata/],
    ['192.0.0.192', /metadata/],
    ['192.0.0.8', /IETF/],
    ['192.0.2.1', /documentation/],
    ['198.51.100.7', /documentation/],
    ['203.0.113.9', /documentation/],
    ['198.18.0.1', /benchmarking/],
    ['198.19.255.255', /benchmarking/],
    ['192.88.99.1', /6to4/],
    ['224.0.0.1', /multicast/],
    ['239.255.255.250', /multicast/],
    ['240.0.0.1', /reserved/],
    ['255.255.255.255', /reserved/],
    // IPv6
    ['::', /unspecified/],
    ['::1', /loopback/],
    ['fc00::1', /unique-local/],
    ['fd12:3456:789a::1', /unique-local/],
    ['fdff:ffff:ffff:ffff:ffff:ffff:ffff:ffff', /unique-local/],
    ['fd00:ec2::254', /metadata/],
    ['fe80::1', /link-local/],
    ['fe80::1%eth0', /link-local/],
    ['febf:ffff::1', /link-local/],
    ['fec0::1', /site-local/],
    ['ff02::1', /multicast/],
    ['ff05::1:3', /multicast/],
    ['2001:db8::1', /documentation/],
    ['2001:0:4136:e378:8000:63bf:3fff:fdd2', /Teredo/],
    ['2001:2::1', /benchmarking/],
    ['2001:10::1', /ORCHID/],
    ['100::1', /discard/],
    ['64:ff9b:1::1', /NAT64/],
    ['4000::1', /reserved IPv6/],
    ['::127.0.0.1', /IPv4-compatible/], // deprecated IPv4-compatible form
    ['::8.8.8.8', /IPv4-compatible/],
    // forms carrying an IPv4 address are judged by it
    ['::ffff:10.1.2.3', /private/],
    ['::ffff:a9fe:a9fe', /metadata/], // 169.254.169.254 mapped
    ['::ffff:169.254.169.254', /metadata/],
    ['::ffff:0:7f00:1', /loopback.*embedded/], // IPv4-translated
    ['64:ff9b::7f00:1', /loopback.*embedded/], // NAT64 of 127.0.0.1
    ['64:ff9b::a9fe:a9fe', /metadata.*embedded/], // NAT64 of 169.254.169.254
    ['64:ff9b::192.168.1.1', /private.*embedded/],
    ['2002:7f00:1::1', /loopback.*embedded/], // 6to4 of 127.0.0.1
    ['2002:a00:1::', /private.*embedded/], // 6to4 of 10.0.0.1
  ];
  for (const [addr, re] of BLOCKED) {
    it(`blocks ${addr}`, () => {
      const r = reason(addr);
      assert.ok(r, `${addr} should be blocked`);
      assert.match(r, re);
    });
  }

  const PUBLIC = [
    '8.8.8.8',
    '1.1.1.1',
    '93.184.216.34',
    '172.15.255.255',
    '172.32.0.0',
    '100.63.255.255',
    '100.128.0.0',
    '192.169.0.1',
    '169.253.255.255',
    '169.255.0.0',
    '11.0.0.0',
    '9.255.255.255',
    '223.255.255.255',
    '198.17.255.255',
    '198.20.0.0',
    '2606:4700:4700::1111',
    '2a00:1450:4001::1',
    '64:ff9b::808:808',
    '2002:808:808::1',
    '::ffff:8.8.8.8',
    '3fff:ffff::1',
  ];
  for (const addr of PUBLIC) {
    it(`lets ${addr} through`, () => {
      assert.equal(reason(addr), null);
    });
  }
});

describe('net-guard: names', () => {
  it('loopback and metadata names are refused by name', () => {
    for (const n of [
      'localhost',
      'LOCALHOST',
      'localhost.',
      'foo.localhost',
      'a.b.localhost.',
      'localhost.localdomain',
      'ip6-localhost',
      'ip6-loopback',
    ])
      assert.equal(blockedName(n), 'loopback host name', n);
    for (const n of [
      'metadata.google.internal',
      'METADATA.GOOGLE.INTERNAL.',
      'metadata',
      'metadata.goog',
      'instance-data',
      'instance-data.ec2.internal',
    ])
      assert.equal(blockedName(n), 'cloud metadata host name', n);
    for (const n of ['example.com', 'localhost.example.com', 'mylocalhost', 'metadata.example.com'])
      assert.equal(blockedName(n), null, n);
  });
});

describe('net-guard: allow-list', () => {
  it('parses hosts, IPs and CIDRs; rejects what it cannot read', () => {
    const l = parseAllowList(' 127.0.0.1, 10.0.0.0/8 ,::1,fd00::/8, localhost, *.corp.example, .svc.local, ,');
    assert.deepEqual(l.entries, [
      '127.0.0.1',
      '10.0.0.0/8',
      '::1',
      'fd00::/8',
      'localhost',
      '*.corp.example',
      '.svc.local',
    ]);
    assert.equal(l.cidrs.length, 4);
    assert.deepEqual([...l.names], ['localhost']);
    assert.deepEqual(l.suffixes, ['.corp.example', '.svc.local']);
    assert.deepEqual(parseAllowList(['192.168.0.0/16']).cidrs.length, 1);
    assert.equal(parseAllowList(undefined).entries.length, 0);
    for (const bad of ['10.0.0.0/33', '::/129', 'not a host!', '1.2.3.4.5', 'http://x', '10.0.0.0/', '*.']) {
      assert.throws(() => parseAllowList(bad), /fetch allow-list: cannot read entry/, bad);
    }
  });

  it('exempts exactly the listed addresses and ranges', () => {
    const allow = '127.0.0.1,10.0.0.0/8,::1,fd00::/8,169.254.169.254';
    assert.equal(reason('127.0.0.1', allow), null);
    assert.equal(reason('2130706433', allow), null); // same address, other spelling
    assert.equal(reason('::ffff:127.0.0.1', allow), null); // mapped form of an allowed IPv4
    assert.equal(reason('127.0.0.2', allow), 'loopback address');
    assert.equal(reason('10.200.3.4', allow), null);
    assert.match(reason('11.0.0.1', allow) ?? 'public', /public/);
    assert.match(reason('172.16.0.1', allow) ?? '', /private/);
    assert.equal(reason('::1', allow), null);
    assert.equal(reason('fd12::1', allow), null);
    assert.match(reason('fc00::1', allow) ?? '', /unique-local/);
    assert.equal(reason('169.254.169.254', allow), null);
    assert.match(reason('169.254.169.253', allow) ?? '', /link-local/);
    // an IPv4-mapped CIDR is an IPv4 CIDR
    assert.equal(reason('192.168.4.4', '::ffff:192.168.0.0/112'), null);
  });
});

describe('net-guard: resolve() with a fake resolver (no DNS, no traffic)', () => {
  function guard(allow: string | undefined, table: Record<string, string[]>): { g: NetGuard; asked: string[] } {
    const asked: string[] = [];
    const g = new NetGuard(allow, async (host) => {
      asked.push(host);
      const addrs = table[host];
      if (!addrs) throw Object.assign(new Error(`getaddrinfo ENOTFOUND ${host}`), { code: 'ENOTFOUND' });
      return addrs.map((address) => ({ address, family: address.includes(':') ? 6 : 4 }));
    });
    return { g, asked };
  }

  it('IP literals are checked as they are, never looked up', async () => {
    const { g, asked } = guard(undefined, {});
    for (const h of [
      '127.0.0.1',
      '2130706433',
      '0x7f000001',
      '[::1]',
      '[::ffff:127.0.0.1]',
      '0.0.0.0',
      '169.254.169.254',
      '[fd00:ec2::254]',
      '10.1.1.1',
    ]) {
      await assert.rejects(g.resolve(h), FetchRefusedError, h);
    }
    assert.deepEqual(await g.resolve('8.8.8.8'), { address: '8.8.8.8', family: 4 });
    assert.deepEqual(await g.resolve('[2606:4700:4700::1111]'), { address: '2606:4700:4700:0:0:0:0:1111', family: 6 });
    assert.deepEqual(asked, []);
  });

  it('loopback and metadata names are refused without a DNS query', async () => {
    const { g, asked } = guard(undefined, { localhost: ['127.0.0.1'] });
    await assert.rejects(g.resolve('localhost'), /localhost is not allowed \(loopback host name\)/);
    await assert.rejects(
      g.resolve('Metadata.Google.Internal.'),
      /metadata\.google\.internal is not allowed \(cloud metadata host name\)/,
    );
    assert.deepEqual(asked, []);
  });

  it('a name is judged by what it resolves to; the first allowed address is the one used', async () => {
    const { g } = guard(undefined, {
      'internal.test': ['10.0.0.5'],
      'mixed.test': ['10.0.0.5', '93.184.216.34'],
      'rebind.test': ['::ffff:169.254.169.254'],
      'v6.test': ['fe80::1', '2606:4700::1'],
      'public.test': ['93.184.216.34'],
    });
    await assert.rejects(
      g.resolve('internal.test'),
      /internal\.test resolves to 10\.0\.0\.5, which is not allowed \(private network address\)/,
    );
    await assert.rejects(
      g.resolve('rebind.test'),
      /resolves to 169\.254\.169\.254, which is not allowed \(cloud metadata address\)/,
    );
    assert.deepEqual(await g.resolve('mixed.test'), { address: '93.184.216.34', family: 4 });
    assert.deepEqual(await g.resolve('v6.test'), { address: '2606:4700:0:0:0:0:0:1', family: 6 });
    assert.deepEqual(await g.resolve('PUBLIC.test.'), { address: '93.184.216.34', family: 4 });
    await assert.rejects(
      g.resolve('nx.test'),
      (err: Error & { code?: string }) => err.code === 'ENOTFOUND' && /cannot resolve nx\.test/.test(err.message),
    );
  });

  it('allow-listed names are trusted with what they resolve to; allow-listed IPs make localhost usable', async () => {
    const { g, asked } = guard('*.corp.example,db.internal.test,127.0.0.1', {
      'api.corp.example': ['10.9.8.7'],
      'db.internal.test': ['192.168.1.2'],
      'other.internal.test': ['192.168.1.3'],
      localhost: ['::1', '127.0.0.1'],
      'metadata.google.internal': ['169.254.169.254'],
    });
    assert.deepEqual(await g.resolve('api.corp.example'), { address: '10.9.8.7', family: 4 });
    assert.deepEqual(await g.resolve('db.internal.test'), { address: '192.168.1.2', family: 4 });
    await assert.rejects(g.resolve('other.internal.test'), /private/);
    // ::1 is not allow-listed, 127.0.0.1 is: localhost goes to 127.0.0.1
    assert.deepEqual(await g.resolve('localhost'), { address: '127.0.0.1', family: 4 });
    // a metadata name stays refused: its address is not on the list
    await assert.rejects(g.resolve('metadata.google.internal'), /cloud metadata host name/);
    assert.ok(asked.includes('localhost'));
  });
});
