--[[
  End a scheduled task's run: delete the running key only if this run still holds it, so a run that outlived
  its key cannot free the key of the run after it.

    Input:
      KEYS[1]    the running key

      ARGV[1]    this run's token, as set by schedule-try-start.lua

    Output:
      1 deleted, 0 the key was gone or held by another run.
]]
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
