-- Remove memberships whose deadline passed (their server stopped refreshing them: crash or network loss).
-- KEYS[1] membership deadlines
-- ARGV[1] now ms  ARGV[2] at most this many entries  ARGV[3] members-hash key prefix ("stue:c:")
-- Members hashes are derived from the entry ("cid:pid"), so this script must run on a single Redis, not a cluster.
-- Returns {cid, pid, {pid, value, ...} of the remaining members, ...}
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[2]))
local result = {}
for _, entry in ipairs(due) do
  local cid, pid = string.match(entry, '^([^:]+):(.+)$')
  redis.call('ZREM', KEYS[1], entry)
  if cid then
    local key = ARGV[3] .. cid .. ':members'
    if redis.call('HDEL', key, pid) == 1 then
      table.insert(result, cid); table.insert(result, pid)
      table.insert(result, redis.call('HGETALL', key))
    end
  end
end
return result
