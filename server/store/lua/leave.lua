-- Remove a participant from a consultation.
-- KEYS[1] members hash  KEYS[2] membership deadlines
-- ARGV[1] cid  ARGV[2] pid
-- Returns {} when the participant was not a member (already removed), else {1, pid, value, ...} of the others.
if redis.call('HDEL', KEYS[1], ARGV[2]) == 0 then
  return {}
end
redis.call('ZREM', KEYS[2], ARGV[1] .. ':' .. ARGV[2])
local result = {1}
local members = redis.call('HGETALL', KEYS[1])
for i = 1, #members do
  table.insert(result, members[i])
end
return result
