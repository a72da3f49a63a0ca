--[[
  Start a scheduled task's run if this period has not run yet and no run is still going: both keys are checked
  and set in one step, so no worker ever sees one taken and the other not.

    Input:
      KEYS[1]    the period key (`<prefix>:<configId>:<task>:period:<ISO period start>`)
      KEYS[2]    the running key (`<prefix>:<configId>:<task>:running`)

      ARGV[1]    this run's token (owner and a random id), stored in both keys
      ARGV[2]    how long the running key lives, ms (the task's longest run)
      ARGV[3]    how long the period key lives, ms (the period plus a margin for clock skew)

    Output:
      0 started (both keys set), 1 this period already ran, 2 the previous run is still going.
]]
if redis.call('EXISTS', KEYS[1]) == 1 then return 1 end
if redis.call('EXISTS', KEYS[2]) == 1 then return 2 end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[3])
redis.call('SET', KEYS[2], ARGV[1], 'PX', ARGV[2])
return 0
