"""The Lua scripts of the Redis backend.

A script runs atomically on the server: no other command runs between its
first and last line. Each script names every Redis key it touches in ``KEYS``
(all in one namespace, so one hash slot), so it also runs on Redis Cluster.
They use only commands of Redis 5.0 and later, and run the same on 6.2 and 7.x.

The scripts are sent with EVALSHA (redis-py's ``register_script``; the text is
loaded once per server, on the first NOSCRIPT). See :mod:`statekit_redis.layout`
for the keys and the record text.
"""

from __future__ import annotations

__all__ = [
    "APPEND",
    "APPEND_FIXED_ARGS",
    "APPEND_FIXED_KEYS",
    "APPEND_WRITE_ARGS",
    "CACHE_PUT",
    "LATEST",
    "PRUNE",
]

APPEND_FIXED_KEYS = 4
"""KEYS of APPEND before the per-write history keys: heads, live, log, seq."""
APPEND_FIXED_ARGS = 2
"""ARGV of APPEND before the per-write groups: log_max, inline_max."""
APPEND_WRITE_ARGS = 4
"""ARGV per write: user key, expect ('' = ANY), live ('1' or '0'), record tail."""

APPEND = """
-- Append one version per write, all or none.
-- KEYS: heads, live, log, seq, then the history ZSET of each write's key
-- ARGV: log_max, inline_max, then per write: key, expect ('' = ANY), live ('1'/'0'), tail
-- Returns {1, "v1 v2 ..."} (the new versions, one string: cheaper to parse than n integers)
-- or, on a failed expect, {0, write index, head version, head live}.
local heads, live, log, seq = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local n = #KEYS - 4
local versions, alive = {}, {}

-- Check every expect first; nothing is written unless all hold.
for i = 1, n do
  local a = 2 + (i - 1) * 4
  local head = redis.call('HGET', heads, ARGV[a + 1])
  local version, is_alive = 0, false
  if head then
    local sep = string.find(head, ':', 1, true)
    version = tonumber(string.sub(head, 1, sep - 1))
    is_alive = string.sub(head, sep + 1) == '1'
  end
  local expect = ARGV[a + 2]
  if expect ~= '' then
    -- statekit.backend.check_expect: ANY | 0 = no live value | n = head is n
    local want = tonumber(expect)
    if want ~= version and not (want == 0 and not is_alive) then
      return {0, i, version, is_alive and 1 or 0}
    end
  end
  versions[i] = version + 1
  alive[i] = is_alive
end

local log_max, inline_max = ARGV[1], tonumber(ARGV[2])
local last = redis.call('INCRBY', seq, n)
local out = {}
for i = 1, n do
  local a = 2 + (i - 1) * 4
  local key, now_live = ARGV[a + 1], ARGV[a + 3]
  local v = string.format('%d', versions[i])
  local record = '{"v":' .. v .. ARGV[a + 4]
  redis.call('ZADD', KEYS[4 + i], versions[i], record)
  redis.call('HSET', heads, key, v .. ':' .. now_live)
  if now_live == '1' then
    if not alive[i] then redis.call('ZADD', live, 0, key) end
  elseif alive[i] then
    redis.call('ZREM', live, key)
  end
  local id = string.format('%d-0', last - n + i)
  if #record <= inline_max then
    redis.call('XADD', log, 'MAXLEN', '~', log_max, id, 'k', key, 'v', v, 'r', record)
  else
    redis.call('XADD', log, 'MAXLEN', '~', log_max, id, 'k', key, 'v', v)
  end
  out[i] = v
end
return {1, table.concat(out, ' ')}
"""

LATEST = """
-- The head record text of each history ZSET in KEYS (false where there is none).
local out = {}
for i = 1, #KEYS do
  local top = redis.call('ZRANGE', KEYS[i], -1, -1)
  out[i] = top[1] or false
end
return out
"""

PRUNE = """
-- Drop the versions of ARGV[1] below ARGV[2], never its head.
-- KEYS: heads, the key's history ZSET. Returns how many were dropped.
local head = redis.call('HGET', KEYS[1], ARGV[1])
if not head then return 0 end
local version = tonumber(string.sub(head, 1, string.find(head, ':', 1, true) - 1))
local cut = math.min(tonumber(ARGV[2]), version)
return redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', '(' .. string.format('%d', cut))
"""

CACHE_PUT = """
-- Cache heads for the tiered store's shared level, never replacing a newer version
-- with an older one (so processes putting concurrently cannot move an entry back).
-- KEYS: the cache entries; ARGV[1]: ttl in ms; ARGV[1 + i]: the text of entry i,
-- which starts with {"v":<version> (version 0: the key has no head).
-- The same version is set again: its ttl starts over. Returns how many were set.
local ttl, set = ARGV[1], 0
for i = 1, #KEYS do
  local new = ARGV[i + 1]
  local old = redis.call('GET', KEYS[i])
  local old_version = old and tonumber(string.match(old, '^{"v":(%d+)')) or -1
  if old_version <= tonumber(string.match(new, '^{"v":(%d+)')) then
    redis.call('SET', KEYS[i], new, 'PX', ttl)
    set = set + 1
  end
end
return set
"""
