/**
 * Lua scripts that make every Redis state change of a delivery atomic. kombu itself pops (BRPOP) and writes
 * its `unacked` record in two steps, so a crash in between loses the message; here the pop, the kombu
 * records and our own per-worker bookkeeping happen in one script, and so do publish + ack.
 */

/**
 * Pop up to N envelopes: first from this worker's landing list (filled by an idle BLMOVE), then from the
 * queue's priority lists in kombu's order. Each one gets kombu's `unacked` hash entry
 * `[<envelope>, exchange, routing_key]`, an `unacked_index` score in Unix seconds (what Python's
 * restore_visible reads) and a member in our in-flight set. Envelopes without a usable delivery_tag or
 * delivery_info cannot get an unacked record that Python could restore, so they are set aside right here
 * (pushed to the set-aside list with the reason) and returned only for logging.
 *
 * KEYS: 1 unacked, 2 unacked_index, 3 in-flight set, 4 landing list, 5 set-aside list, 6.. priority lists
 * ARGV: 1 max, 2 now (Unix seconds, float), 3 now (ISO, for set-aside records), 4 queue name (for them too)
 * Returns: { {envelope, delivery_tag, ...}, {reason, envelope, ...} } — the tag comes from here so that the
 * caller never has to parse an envelope again to learn it (Lua's JSON accepts NaN and hex, JSON.parse not).
 */
export const POP_SCRIPT = `
local max = tonumber(ARGV[1])
local taken = {}
local bad = {}
local count = 0
local function accept(raw)
  local ok, env = pcall(cjson.decode, raw)
  local tag, ex, rk
  local reason
  if not ok or type(env) ~= 'table' then
    reason = 'envelope is not a JSON object'
  elseif type(env.properties) ~= 'table' then
    reason = 'envelope has no properties object'
  else
    local p = env.properties
    tag = p.delivery_tag
    if type(p.delivery_info) == 'table' then
      ex = p.delivery_info.exchange
      rk = p.delivery_info.routing_key
    end
    if type(tag) ~= 'string' or tag == '' then
      reason = 'envelope has no properties.delivery_tag'
    elseif type(ex) ~= 'string' or type(rk) ~= 'string' then
      reason = 'envelope has no properties.delivery_info.exchange/routing_key'
    end
  end
  count = count + 1
  if reason then
    redis.call('LPUSH', KEYS[5], cjson.encode({reason = reason, time = ARGV[3], queue = ARGV[4], message = raw}))
    table.insert(bad, reason)
    table.insert(bad, raw)
    return
  end
  redis.call('HSET', KEYS[1], tag, '[' .. raw .. ', ' .. cjson.encode(ex) .. ', ' .. cjson.encode(rk) .. ']')
  redis.call('ZADD', KEYS[2], ARGV[2], tag)
  redis.call('SADD', KEYS[3], tag)
  table.insert(taken, raw)
  table.insert(taken, tag)
end
for i = 4, #KEYS do
  if i ~= 5 then
    while count < max do
      local items = redis.call('RPOP', KEYS[i], max - count)
      if not items then break end
      for _, raw in ipairs(items) do accept(raw) end
    end
  end
  if count >= max then break end
end
return {taken, bad}
`;

/**
 * Publish outputs and ack inputs in one step. A delivery whose unacked record is gone (another process
 * restored it because it thought this worker dead) is skipped entirely: its restored copy will be
 * processed again, so publishing our output too would only duplicate it.
 *
 * KEYS: 1 unacked, 2 unacked_index, 3 in-flight set, 4.. output lists
 * ARGV: groups of: tag, n, then n pairs (output key index into KEYS, payload)
 * Returns: the tags that were skipped.
 */
export const SETTLE_SCRIPT = `
local skipped = {}
local i = 1
while i <= #ARGV do
  local tag = ARGV[i]
  local n = tonumber(ARGV[i + 1])
  i = i + 2
  local held = redis.call('HDEL', KEYS[1], tag) == 1
  redis.call('ZREM', KEYS[2], tag)
  redis.call('SREM', KEYS[3], tag)
  for _ = 1, n do
    if held then redis.call('LPUSH', KEYS[tonumber(ARGV[i])], ARGV[i + 1]) end
    i = i + 2
  end
  if not held then table.insert(skipped, tag) end
end
return skipped
`;

/**
 * Give messages back to their queue if their unacked record still exists (whoever restores first wins, so
 * a message is never restored twice). RPUSH puts them at the consuming end, next in line, as kombu does.
 * When restoring a known holder's messages, a tag must still be in that holder's in-flight set: once
 * restored, the same delivery tag may already be held again by a live worker, whose record must not be taken.
 *
 * KEYS: 1 unacked, 2 unacked_index, 3 in-flight set of the holder (or any unused key)
 * ARGV: 1 '1' to require membership of KEYS[3], else '0'; then groups of: tag, target list, envelope
 * Returns: number restored.
 */
export const RESTORE_SCRIPT = `
local restored = 0
local needMember = ARGV[1] == '1'
for i = 2, #ARGV, 3 do
  local tag = ARGV[i]
  if needMember and redis.call('SISMEMBER', KEYS[3], tag) == 0 then
    -- restored by someone else already (and possibly taken again by a live worker): not ours to touch
  elseif redis.call('HDEL', KEYS[1], tag) == 1 then
    redis.call('RPUSH', ARGV[i + 1], ARGV[i + 2])
    restored = restored + 1
  end
  redis.call('ZREM', KEYS[2], tag)
  redis.call('SREM', KEYS[3], tag)
end
return restored
`;
