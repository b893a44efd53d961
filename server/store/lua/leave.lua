-- Remove a participant from a consultation, if the membership is still the one the caller's connection held.
-- KEYS[1] members hash  KEYS[2] membership deadlines
-- ARGV[1] cid  ARGV[2] pid  ARGV[3] the member value the connection held
-- Returns {} when the participant was not a member (already removed) or its membership belongs to another
-- connection now (resumed elsewhere), else {1, pid, value, ...} of the others.
if redis.call('HGET', KEYS[1], ARGV[2]) ~= ARGV[3] then
  return {}
end
redis.call('HDEL', KEYS[1], ARGV[2])
redis.call('ZREM', KEYS[2], ARGV[1] .. ':' .. ARGV[2])
local result = {1}
local members = redis.call('HGETALL', KEYS[1])
for i = 1, #members do
  table.insert(result, members[i])
end
return result
