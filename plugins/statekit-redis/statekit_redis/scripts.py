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
    "AS_OF",
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

_AT_OF = """
-- The time (µs) of a stored version's text: layout 2 has it first; a layout 1 text
-- is decoded (0 if even that fails: the caller's clock then wins).
local function at_of(record)
  local at = string.match(record, '^{"v":%d+,"at":(%d+)')
  if at then return tonumber(at) end
  local ok, decoded = pcall(cjson.decode, record)
  if ok and type(decoded) == 'table' and type(decoded.at) == 'number' then
    return decoded.at
  end
  return 0
end
"""

APPEND = (
    _AT_OF
    + """
-- Append one version per write, all or none.
-- KEYS: heads, live, log, seq, then the history ZSET of each write's key
-- ARGV: log_max, inline_max, then per write: key, expect ('' = ANY), live ('1'/'0'), tail,
--   then per guard: key, version
-- Returns {1, "v1 v2 ...", at} (the new versions as one string: cheaper to parse than n
-- integers, and the batch's time in µs) or, on a failed expect,
-- {0, write index, head version, head live}.
local heads, live, log, seq = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local n = #KEYS - 4
local versions, alive = {}, {}
local latest = -1  -- the newest previous `at` of the batch's keys

-- Guards: versions of other keys, checked and not written (statekit.backend.check_guard),
-- in ARGV after the writes' groups, a key and a version each; on one that does not hold,
-- {2, guard index, head version}.
for g = 3 + n * 4, #ARGV, 2 do
  local head = redis.call('HGET', heads, ARGV[g])
  local version, is_alive = 0, false
  if head then
    local v, l = string.match(head, '^(%d+):(%d)')
    version = tonumber(v)
    is_alive = l == '1'
  end
  local want = tonumber(ARGV[g + 1])
  if want ~= version and not (want == 0 and not is_alive) then
    return {2, math.floor((g - 1 - n * 4) / 2), version}
  end
end

-- Check every expect first; nothing is written unless all hold.
for i = 1, n do
  local a = 2 + (i - 1) * 4
  local head = redis.call('HGET', heads, ARGV[a + 1])
  local version, is_alive = 0, false
  if head then
    -- "<version>:<live>:<at>" (layout 1: "<version>:<live>", the time in the record)
    local v, l, t = string.match(head, '^(%d+):(%d)(.*)$')
    version = tonumber(v)
    is_alive = l == '1'
    local at = tonumber(string.sub(t, 2))
    if not at then
      local top = redis.call('ZRANGE', KEYS[4 + i], -1, -1)
      at = top[1] and at_of(top[1]) or 0
    end
    if at > latest then latest = at end
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

-- The batch's time: the server's clock, past every key's previous version, so per
-- key `at` rises with the version (statekit.backend.next_at).
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000000 + tonumber(clock[2])
if now <= latest then now = latest + 1 end
local at = string.format('%d', now)

local log_max, inline_max = ARGV[1], tonumber(ARGV[2])
local last = redis.call('INCRBY', seq, n)
local out = {}
for i = 1, n do
  local a = 2 + (i - 1) * 4
  local key, now_live = ARGV[a + 1], ARGV[a + 3]
  local v = string.format('%d', versions[i])
  local record = '{"v":' .. v .. ',"at":' .. at .. ARGV[a + 4]
  redis.call('ZADD', KEYS[4 + i], versions[i], record)
  redis.call('HSET', heads, key, v .. ':' .. now_live .. ':' .. at)
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
return {1, table.concat(out, ' '), at}
"""
)

AS_OF = (
    _AT_OF
    + """
-- The text of each key's newest version with at <= ARGV[1] (µs), false where none.
-- KEYS: the history ZSETs. A binary search on the version scores: `at` rises with
-- the version, so about log2(versions) lookups per key, never a walk.
local wanted = tonumber(ARGV[1])
local out = {}
for i = 1, #KEYS do
  local history = KEYS[i]
  local found = false
  local first = redis.call('ZRANGE', history, 0, 0, 'WITHSCORES')
  if first[1] and at_of(first[1]) <= wanted then
    local newest = redis.call('ZRANGE', history, -1, -1, 'WITHSCORES')
    if at_of(newest[1]) <= wanted then
      found = newest[1]
    else
      -- low: a version at or before `wanted`; from high on, every version is later.
      local low, low_text, high = tonumber(first[2]), first[1], tonumber(newest[2])
      while high - low > 1 do
        local middle = math.floor((low + high) / 2)
        local probe = redis.call(
          'ZRANGEBYSCORE', history, middle, '(' .. high, 'WITHSCORES', 'LIMIT', 0, 1)
        if probe[1] and at_of(probe[1]) <= wanted then
          low, low_text = tonumber(probe[2]), probe[1]
        else
          high = middle
        end
      end
      found = low_text
    end
  end
  out[i] = found
end
return out
"""
)

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
