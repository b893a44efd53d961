-- Continue a membership on a new connection: move it to the new node, store the new resume digest, push its
-- deadline back. Only if the membership is still exactly the one the caller verified (compare and set: a sweep,
-- a replacing join or another resume in between wins) and its deadline has not passed.
-- KEYS[1] members hash  KEYS[2] membership deadlines  KEYS[3] the consultation record
-- ARGV[1] cid  ARGV[2] pid  ARGV[3] the verified member value  ARGV[4] the new member value  ARGV[5] deadline ms
-- ARGV[6] now ms  ARGV[7] the membership TTL in ms
-- Returns {} when the membership cannot be resumed, else {1, pid, value, ...} of the others.
local entry = ARGV[1] .. ':' .. ARGV[2]
local score = redis.call('ZSCORE', KEYS[2], entry)
if redis.call('HGET', KEYS[1], ARGV[2]) ~= ARGV[3] or (not score) or tonumber(score) < tonumber(ARGV[6]) then
  return {}
end
redis.call('HSET', KEYS[1], ARGV[2], ARGV[4])
redis.call('PEXPIRE', KEYS[1], math.max(redis.call('PTTL', KEYS[3]), tonumber(ARGV[7])))
redis.call('ZADD', KEYS[2], ARGV[5], entry)
local result = {1}
local members = redis.call('HGETALL', KEYS[1])
for i = 1, #members, 2 do
  if members[i] ~= ARGV[2] then
    table.insert(result, members[i]); table.insert(result, members[i + 1])
  end
end
return result
