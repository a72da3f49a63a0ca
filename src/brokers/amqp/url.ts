import { maskPassword } from '../mask-password';

/**
 * Celery/kombu-style AMQP broker URLs:
 *   amqp://user:pass@host:port/vhost     vhost "vhost"
 *   amqp://user:pass@host:port//         vhost "/" (the path after the first slash is the vhost)
 *   amqp://host                          guest/guest, port 5672, vhost "/"
 *   amqps://…                            TLS, port 5671
 * User, password and vhost are percent-decoded (`%2F` = "/"). Query options (kombu names): `heartbeat`
 * (seconds), `connection_timeout` / `connect_timeout` (seconds), `frame_max` (bytes). `pyamqp://` and
 * `pyamqps://` (Celery's explicit transport names) are accepted as synonyms.
 */
export interface AmqpUrl {
  tls: boolean;
  hostname: string;
  port: number;
  username: string;
  password: string;
  vhost: string;
  /** Seconds, when given in the URL. */
  heartbeat?: number;
  /** Milliseconds, when given in the URL (as seconds, `connection_timeout`). */
  connectionTimeoutMs?: number;
  frameMax?: number;
  /** Query keys we did not understand (reported, not fatal). */
  unknownOptions: string[];
  /** The URL with the password masked, for logs. */
  displayUrl: string;
}

const SCHEMES: Record<string, boolean> = { amqp: false, pyamqp: false, amqps: true, pyamqps: true };

function decode(part: string, what: string, url: string): string {
  try {
    return decodeURIComponent(part);
  } catch {
    throw new Error(`invalid percent-encoding in the ${what} of AMQP URL ${maskPassword(url)}`);
  }
}

function seconds(value: string, key: string): number {
  const n = Number(value);
  if (value.trim() === '' || !Number.isFinite(n) || n < 0)
    throw new Error(`AMQP URL option ${key}=${value} is not a number of seconds`);
  return n;
}

export function parseAmqpUrl(url: string): AmqpUrl {
  const m = /^([a-zA-Z][a-zA-Z0-9+.-]*):\/\/(.*)$/s.exec(url.trim());
  if (!m) throw new Error(`not an AMQP URL: ${maskPassword(url)}`);
  const scheme = m[1]!.toLowerCase();
  const tls = SCHEMES[scheme];
  if (tls === undefined) throw new Error(`unsupported AMQP URL scheme ${scheme}:// (expected amqp:// or amqps://)`);
  let rest = m[2]!;
  let query = '';
  const q = rest.indexOf('?');
  if (q >= 0) {
    query = rest.slice(q + 1);
    rest = rest.slice(0, q);
  }
  const hash = query.indexOf('#');
  if (hash >= 0) query = query.slice(0, hash);
  const slash = rest.indexOf('/');
  const authority = slash >= 0 ? rest.slice(0, slash) : rest;
  const path = slash >= 0 ? rest.slice(slash + 1) : '';

  let userinfo: string | null = null;
  let hostport = authority;
  const at = authority.lastIndexOf('@');
  if (at >= 0) {
    userinfo = authority.slice(0, at);
    hostport = authority.slice(at + 1);
  }
  let username = 'guest';
  let password = 'guest';
  if (userinfo !== null) {
    const colon = userinfo.indexOf(':');
    username = decode(colon >= 0 ? userinfo.slice(0, colon) : userinfo, 'user name', url);
    password = colon >= 0 ? decode(userinfo.slice(colon + 1), 'password', url) : '';
    if (username === '' && password === '') {
      username = 'guest';
      password = 'guest';
    }
  }

  let hostname: string;
  let portText = '';
  if (hostport.startsWith('[')) {
    const end = hostport.indexOf(']');
    if (end < 0) throw new Error(`invalid IPv6 host in AMQP URL ${maskPassword(url)}`);
    hostname = hostport.slice(1, end);
    const after = hostport.slice(end + 1);
    if (after.startsWith(':')) portText = after.slice(1);
    else if (after !== '') throw new Error(`invalid host in AMQP URL ${maskPassword(url)}`);
  } else {
    const colon = hostport.lastIndexOf(':');
    hostname = colon >= 0 ? hostport.slice(0, colon) : hostport;
    portText = colon >= 0 ? hostport.slice(colon + 1) : '';
  }
  hostname = decode(hostname, 'host', url) || 'localhost';
  let port = tls ? 5671 : 5672;
  if (portText !== '') {
    port = Number(portText);
    if (!/^\d+$/.test(portText) || port < 1 || port > 65535)
      throw new Error(`invalid port "${portText}" in AMQP URL ${maskPassword(url)}`);
  }

  // kombu: the vhost is the path without its leading slash, unquoted; "" (amqp://host/) means "/".
  const vhost = decode(path, 'virtual host', url) || '/';

  const parsed: AmqpUrl = {
    tls,
    hostname,
    port,
    username,
    password,
    vhost,
    unknownOptions: [],
    displayUrl: maskPassword(url),
  };
  for (const pair of query.split('&')) {
    if (pair === '') continue;
    const eq = pair.indexOf('=');
    const key = decode(eq >= 0 ? pair.slice(0, eq) : pair, 'query', url);
    const value = decode(eq >= 0 ? pair.slice(eq + 1).replace(/\+/g, ' ') : '', 'query', url);
    switch (key) {
      case 'heartbeat':
        parsed.heartbeat = seconds(value, key);
        break;
      case 'connection_timeout':
      case 'connect_timeout':
        parsed.connectionTimeoutMs = Math.round(seconds(value, key) * 1000);
        break;
      case 'frame_max':
      case 'frameMax':
        parsed.frameMax = Math.trunc(seconds(value, key));
        break;
      default:
        parsed.unknownOptions.push(key);
    }
  }
  return parsed;
}

/** What amqplib's connect() needs from a parsed URL (its other options — heartbeat, frameMax — are the caller's). */
export function connectTarget(u: AmqpUrl): {
  protocol: 'amqp' | 'amqps';
  hostname: string;
  port: number;
  username: string;
  password: string;
  vhost: string;
  locale: string;
} {
  return {
    protocol: u.tls ? 'amqps' : 'amqp',
    hostname: u.hostname,
    port: u.port,
    username: u.username,
    password: u.password,
    // amqplib unescapes the vhost it is given (querystring.unescape), so hand it over escaped.
    vhost: encodeURIComponent(u.vhost),
    locale: 'en_US',
  };
}
