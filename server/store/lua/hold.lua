-- Keep a relayed frame for a participant that is away; or, if it has resumed on another node since, pass it on
-- there (the sender's node routed by what it knew a moment before the resume).
-- KEYS[1] its held frames (list)  KEYS[2] the node it last resumed on, for a while after (string)
-- ARGV[1] the frame  ARGV[2] keep at most this many  ARGV[3] keep them this long, ms  ARGV[4] this node
-- ARGV[5] the bus envelope's header for it (the frame follows)  ARGV[6] the bus channel prefix
-- Returns 1 when held, 0 when passed on.
local moved = redis.call('GET', KEYS[2])
if moved and moved ~= ARGV[4] then
  redis.call('PUBLISH', ARGV[6] .. moved, ARGV[5] .. ARGV[1])
  return 0
end
redis.call('RPUSH', KEYS[1], ARGV[1])
redis.call('LTRIM', KEYS[1], -tonumber(ARGV[2]), -1)
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return 1
