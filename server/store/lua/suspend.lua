-- A connection dropped without `leave`: keep its membership until the deadline (the resume grace), unrefreshed.
-- Only if the membership is still the one this connection held (else a resumed connection owns it now).
-- KEYS[1] members hash  KEYS[2] membership deadlines
-- ARGV[1] cid  ARGV[2] pid  ARGV[3] the member value the connection held  ARGV[4] deadline ms
-- Returns 1 when suspended, 0 when the membership is gone or belongs to another connection now.
local entry = ARGV[1] .. ':' .. ARGV[2]
if redis.call('HGET', KEYS[1], ARGV[2]) ~= ARGV[3] or not redis.call('ZSCORE', KEYS[2], entry) then
  return 0
end
redis.call('ZADD', KEYS[2], ARGV[4], entry)
return 1
