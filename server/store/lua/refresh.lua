-- Push back the membership deadlines of one node's participants, in one call per batch.
-- KEYS[1] membership deadlines
-- ARGV[1] the new deadline ms  ARGV[2..] entries "cid:pid"
-- Returns the entries that are no longer members (swept meanwhile): their connections must re-join.
local lost = {}
for i = 2, #ARGV do
  if redis.call('ZSCORE', KEYS[1], ARGV[i]) then
    redis.call('ZADD', KEYS[1], ARGV[1], ARGV[i])
  else
    table.insert(lost, ARGV[i])
  end
end
return lost
