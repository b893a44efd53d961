-- Add a participant to a consultation, atomically dropping members whose membership expired and the member
-- that held the same link before (a reload, or the link opened elsewhere).
-- KEYS[1] members hash of the consultation (pid -> "role|node|link|seq|resume digest")
-- KEYS[2] membership deadlines (sorted set of "cid:pid" scored by deadline in ms)
-- KEYS[3] the consultation record (its expiry bounds the members hash's)
-- ARGV[1] cid  ARGV[2] pid  ARGV[3] "role|node|link" of the newcomer  ARGV[4] link  ARGV[5] deadline ms
-- ARGV[6] now ms  ARGV[7] the membership TTL in ms (the least the members hash lives)  ARGV[8] resume digest
-- The newcomer's seq is one more than the highest seq present, so of two members present together the one with
-- the higher seq joined later (and is the impolite side of their pair).
-- Returns {others, removed, seq}: others = {pid, value, ...}; removed = {pid, value, reason, ...}
local members = redis.call('HGETALL', KEYS[1])
local others, removed = {}, {}
local now = tonumber(ARGV[6])
local highest = 0
for i = 1, #members, 2 do
  local pid, value = members[i], members[i + 1]
  local score = redis.call('ZSCORE', KEYS[2], ARGV[1] .. ':' .. pid)
  local link, seq = string.match(value, '^[^|]*|[^|]*|([^|]*)|?(%d*)')
  local reason = nil
  if (not score) or tonumber(score) < now then
    reason = 'timeout'
  elseif link == ARGV[4] then
    reason = 'replaced'
  end
  if reason then
    redis.call('HDEL', KEYS[1], pid)
    redis.call('ZREM', KEYS[2], ARGV[1] .. ':' .. pid)
    table.insert(removed, pid); table.insert(removed, value); table.insert(removed, reason)
  else
    table.insert(others, pid); table.insert(others, value)
    highest = math.max(highest, tonumber(seq) or 0)
  end
end
local seq = string.format('%d', highest + 1)
redis.call('HSET', KEYS[1], ARGV[2], ARGV[3] .. '|' .. seq .. '|' .. ARGV[8])
redis.call('PEXPIRE', KEYS[1], math.max(redis.call('PTTL', KEYS[3]), tonumber(ARGV[7])))
redis.call('ZADD', KEYS[2], ARGV[5], ARGV[1] .. ':' .. ARGV[2])
return {others, removed, seq}
