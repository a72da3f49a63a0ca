--[[
  Publish outputs and ack inputs in one step. A delivery whose unacked record is gone (another process
  restored it because it thought this worker dead) is skipped entirely: its restored copy will be
  processed again, so publishing our output too would only duplicate it.

    Input:
      KEYS[1]    kombu's `unacked` hash
      KEYS[2]    kombu's `unacked_index` sorted set
      KEYS[3]    this worker's in-flight set
      KEYS[4..]  the output lists

      ARGV[1..]  one group per delivery: its tag, n, then n pairs (index into KEYS of an output list,
                 payload to LPUSH there)

    Output:
      the tags that were skipped (their unacked record was gone).
]]
local skipped = {}
local tags = {}
local pushes = {}
local i = 1
while i <= #ARGV do
  local tag = ARGV[i]
  local n = tonumber(ARGV[i + 1])
  i = i + 2
  tags[#tags + 1] = tag
  local held = redis.call('HDEL', KEYS[1], tag) == 1
  for _ = 1, n do
    if held then
      local key = tonumber(ARGV[i])
      local list = pushes[key]
      if not list then list = {} pushes[key] = list end
      list[#list + 1] = ARGV[i + 1]
    end
    i = i + 2
  end
  if not held then skipped[#skipped + 1] = tag end
end
-- One command per key for the whole batch (the HDEL above is per tag: its reply says whether we still held it).
-- LPUSH of a slice keeps the settlements' order on each list. In slices: Lua's C stack bounds unpack.
local function each(cmd, key, args)
  for j = 1, #args, 1000 do
    redis.call(cmd, key, unpack(args, j, math.min(j + 999, #args)))
  end
end
each('ZREM', KEYS[2], tags)
each('SREM', KEYS[3], tags)
for key, list in pairs(pushes) do each('LPUSH', KEYS[key], list) end
return skipped
