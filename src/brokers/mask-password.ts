/**
 * A broker URL for logs and replies: its password replaced by `mask`, everything else kept as written. The
 * default `**` is kombu's (`maybe_sanitize_url`), so AMQP URLs read the way a Celery worker shows them; Redis
 * URLs keep the `***` our Redis logs and error lines have always shown.
 */
export function maskPassword(url: string, mask = '**'): string {
  const m = /^([a-zA-Z][a-zA-Z0-9+.-]*:\/\/)([^/?#]*)(.*)$/s.exec(url);
  if (!m) return url;
  const authority = m[2]!;
  const at = authority.lastIndexOf('@');
  if (at < 0) return url;
  const userinfo = authority.slice(0, at);
  const colon = userinfo.indexOf(':');
  if (colon < 0) return url;
  return `${m[1]}${userinfo.slice(0, colon)}:${mask}${authority.slice(at)}${m[3]}`;
}
