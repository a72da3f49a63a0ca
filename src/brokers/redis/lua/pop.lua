--[[
  Pop up to N envelopes: first from this worker's landing list (filled by an idle BLMOVE), then from the
  queue's priority lists in kombu's order. Each one gets kombu's `unacked` hash entry
  `[<envelope>, exchange, routing_key]`, an `unacked_index` score in Unix seconds (what Python's
  restore_visible reads) and a member in our in-flight set. Envelopes without a usable delivery_tag or
  delivery_info cannot get an unacked record that Python could restore, so they are set aside right here
  (pushed to the set-aside list with the reason) and returned only for logging.

  Cost: decoding each ~4 KB envelope with cjson was most of Redis's CPU per event, and Redis runs every script
  on its one thread. Kombu's and our envelopes are recognised by a strict pattern on their tail instead (see
  `fast` below); cjson is only the fallback, so what is accepted and refused is unchanged.

    Input:
      KEYS[1]    kombu's `unacked` hash (delivery tag -> [envelope, exchange, routing_key])
      KEYS[2]    kombu's `unacked_index` sorted set (delivery tag, score: Unix seconds)
      KEYS[3]    this worker's in-flight set (delivery tags)
      KEYS[4]    this worker's landing list (popped first)
      KEYS[5]    the set-aside list (`<queue>.rejected`; never popped)
      KEYS[6..]  the queue's priority lists, in kombu's consuming order

      ARGV[1]    max: how many envelopes to take at most
      ARGV[2]    now, Unix seconds (float): the `unacked_index` score
      ARGV[3]    now, ISO 8601: the time of set-aside records
      ARGV[4]    the queue name, for set-aside records

    Output:
      { {envelope, delivery_tag, ...}, {reason, envelope, ...} }: taken envelopes each with its tag (read here
      so that the caller never parses an envelope again to learn it: Lua's JSON accepts NaN and hex,
      JSON.parse not), then the set-aside ones with their reasons.
]]
local max = tonumber(ARGV[1])
local taken = {}
local bad = {}
local count = 0
local hset, zadd, sadd = {}, {}, {}
-- Fast path for the envelopes kombu (json.dumps) and we write: properties is the last top-level key, holds no
-- braces or backslashes except its delivery_info object, and so every quote in it delimits a string. Then the
-- tag, exchange and routing key can be read with patterns from the last few hundred bytes, without decoding
-- the ~4 KB envelope. Anything else (escapes, other key orders, a restored message's extra keys that break
-- the shape) goes through cjson. The caller checks the tag against its own full parse.
local function fast(raw)
  local n = #raw
  -- Plain finds (memchr) and anchored patterns only: an unanchored pattern would be tried at every position.
  local at = string.find(raw, '"properties":', n > 1024 and n - 1024 or 1, true)
  local props
  while at do
    local c1, c2 = string.byte(raw, at - 2, at - 1)
    if c2 == 44 or (c2 == 32 and c1 == 44) then
      local _, _, p = string.find(raw, '^"properties":%s?{([^{}\\]*{[^{}\\]*}[^{}\\]*)}}$', at)
      if p then props = p break end
    end
    at = string.find(raw, '"properties":', at + 1, true)
  end
  if not props then return nil end
  local i = string.find(props, '"delivery_info":', 1, true)
  if not i then return nil end
  local infoStart, infoEnd, info = string.find(props, '^"delivery_info":%s?{([^{}]*)}', i)
  if not info then return nil end
  -- The last delivery_tag key outside delivery_info (the last one counts, as for JSON.parse).
  local tag
  local j = string.find(props, '"delivery_tag":', 1, true)
  while j do
    if j < infoStart or j > infoEnd then tag = string.match(props, '^"delivery_tag":%s?"([^"]*)"', j) or tag end
    j = string.find(props, '"delivery_tag":', j + 1, true)
  end
  local e = string.find(info, '"exchange":', 1, true)
  local r = string.find(info, '"routing_key":', 1, true)
  local ex = e and string.match(info, '^"exchange":%s?"([^"]*)"', e)
  local rk = r and string.match(info, '^"routing_key":%s?"([^"]*)"', r)
  if not tag or tag == '' or not ex or not rk then return nil end
  -- No quote or backslash in either (the patterns saw to that): the JSON string is the text in quotes.
  return tag, '"' .. ex .. '"', '"' .. rk .. '"'
end
local function slow(raw)
  local ok, env = pcall(cjson.decode, raw)
  if not ok or type(env) ~= 'table' then return nil, nil, nil, 'envelope is not a JSON object' end
  if type(env.properties) ~= 'table' then return nil, nil, nil, 'envelope has no properties object' end
  local p = env.properties
  local tag, ex, rk = p.delivery_tag, nil, nil
  if type(p.delivery_info) == 'table' then
    ex = p.delivery_info.exchange
    rk = p.delivery_info.routing_key
  end
  if type(tag) ~= 'string' or tag == '' then return nil, nil, nil, 'envelope has no properties.delivery_tag' end
  if type(ex) ~= 'string' or type(rk) ~= 'string' then
    return nil, nil, nil, 'envelope has no properties.delivery_info.exchange/routing_key'
  end
  return tag, cjson.encode(ex), cjson.encode(rk)
end
local function accept(raw)
  count = count + 1
  local tag, ex, rk = fast(raw)
  local reason
  if not tag then tag, ex, rk, reason = slow(raw) end
  if reason then
    redis.call('LPUSH', KEYS[5], cjson.encode({reason = reason, time = ARGV[3], queue = ARGV[4], message = raw}))
    table.insert(bad, reason)
    table.insert(bad, raw)
    return
  end
  -- kombu's unacked record [envelope, exchange, routing_key], envelope embedded verbatim.
  hset[#hset + 1] = tag
  hset[#hset + 1] = '[' .. raw .. ', ' .. ex .. ', ' .. rk .. ']'
  zadd[#zadd + 1] = ARGV[2]
  zadd[#zadd + 1] = tag
  sadd[#sadd + 1] = tag
  taken[#taken + 1] = raw
  taken[#taken + 1] = tag
end
-- One command per key and batch instead of three per message; in slices, as Lua's C stack bounds unpack.
local function flush(cmd, key, args)
  for i = 1, #args, 1000 do
    redis.call(cmd, key, unpack(args, i, math.min(i + 999, #args)))
  end
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
flush('HSET', KEYS[1], hset)
flush('ZADD', KEYS[2], zadd)
flush('SADD', KEYS[3], sadd)
return {taken, bad}
