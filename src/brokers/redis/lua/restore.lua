--[[
  Give messages back to their queue if their unacked record still exists (whoever restores first wins, so
  a message is never restored twice). RPUSH puts them at the consuming end, next in line, as kombu does.
  When restoring a known holder's messages, a tag must still be in that holder's in-flight set: once
  restored, the same delivery tag may already be held again by a live worker, whose record must not be taken.

    Input:
      KEYS[1]    kombu's `unacked` hash
      KEYS[2]    kombu's `unacked_index` sorted set
      KEYS[3]    the holder's in-flight set (or any unused key when there is no known holder)

      ARGV[1]    '1' to require membership of KEYS[3], else '0'
      ARGV[2..]  one group per message: delivery tag, target list, envelope

    Output:
      the number of messages restored.
]]
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
