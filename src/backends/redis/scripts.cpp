#include "scripts.hpp"

namespace penguiflow::queue::redis {

QueueKeys::QueueKeys(const std::string& ns) {
  const std::string p = "{" + ns + "}:";
  ready = p + "ready";
  scheduled = p + "scheduled";
  leased = p + "leased";
  done = p + "done";
  dead = p + "dead";
  idem = p + "idem";
  counts = p + "counts";
  wake = p + "wake";
  seq = p + "seq";
  leases = p + "leases";
  succeeded = p + "succeeded";
  effects = p + "effects";
  layout = p + "layout";
  job_prefix = p + "job:";
}

std::vector<std::string> QueueKeys::script_keys() const {
  return {ready, scheduled, leased, done, dead, idem, counts, wake, seq, leases, succeeded};
}

namespace {

// Shared by every script. Job hash fields: doc (the JSON document, never rewritten),
// state, tenant, priority, run_at, seq, attempts, created_at, updated_at, idem, reason,
// details, result, latency_s.
// A running job is one with an entry in the K_LEASES hash (its hash keeps state 'queued'):
// id -> '<token> <expires_at> <attempts> <#owner> <owner><tenant>'. Fetch writes the
// entries of all its jobs with one HSET and a settle batch checks them (Q3 fence) with one
// HMGET and drops them with one HDEL, so a job costs one job-hash read at fetch and one
// job-hash write at settle; attempts are written back to the job hash when the lease ends.
const char* const kPrelude = R"LUA(
local K_READY, K_SCHED, K_LEASED, K_DONE, K_DEAD, K_IDEM, K_COUNT, K_WAKE, K_SEQ, K_LEASES, K_SUCC =
  KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6], KEYS[7], KEYS[8], KEYS[9], KEYS[10], KEYS[11]
-- Succeeded jobs are appended to the list K_SUCC in completion order (RPUSH is O(1); a
-- sorted set by completion time cost a skip-list insert per job). K_DONE is the sorted set
-- earlier versions kept; it is still counted, listed and purged, never written.
local PREFIX = ARGV[1]
local NOW_S = ARGV[2]
-- K_LEASES and K_LEASED hold only the jobs in flight, so they stay small, and Redis keeps
-- a small hash or sorted set as a listpack, where every HGET / HDEL / ZADD / ZREM is a
-- linear scan (up to 128 entries: ~2 us a job at 50 in flight). One entry longer than 64
-- bytes converts them to a hash table / skip list for good; this one is written with the
-- leases of every fetch and never removed (score +inf in K_LEASED: it never expires).
local KEEP = '~ penguiflow: keeps this key in its hash-table encoding (docs/wire-format.md)'
local function jk(id) return PREFIX .. id end
local function count(tenant, state, d)
  redis.call('HINCRBY', K_COUNT, (tenant or '') .. '\n' .. state, d)
end
local function move(tenant, from, to)
  if from then count(tenant, from, -1) end
  if to then count(tenant, to, 1) end
end
-- Per-job count updates of a hot loop, summed and applied once per (tenant, state) by
-- count_flush() before the script returns (scripts are atomic: counts() cannot tell).
local DELTA = {}
local function count_later(tenant, state, d)
  local key = (tenant or '') .. '\n' .. state
  DELTA[key] = (DELTA[key] or 0) + d
end
local function count_flush()
  for key, d in pairs(DELTA) do
    if d ~= 0 then redis.call('HINCRBY', K_COUNT, key, d) end
  end
  DELTA = {}
end
-- Q4 order: score = -priority (higher first); equal scores sort by member bytes:
-- run_at in ms (15 digits), then the enqueue sequence (16 digits) = FIFO.
local function ready_member(id, run_at, seq)
  local ms = math.floor((tonumber(run_at) or 0) * 1000)
  if ms < 0 then ms = 0 end
  return string.format('%015d:%016d:', ms, tonumber(seq) or 0) .. id
end
local function ready_add(id, priority, run_at, seq)
  redis.call('ZADD', K_READY, -(tonumber(priority) or 0), ready_member(id, run_at, seq))
end
local function ready_rem(id, run_at, seq)
  redis.call('ZREM', K_READY, ready_member(id, run_at, seq))
end
-- A K_LEASES entry -> token, expires_at, attempts, owner, tenant (nil when absent).
local function lease_parse(rec)
  if not rec then return nil end
  local token, exp, att, olen, rest = string.match(rec, '^(%S+) (%S+) (%d+) (%d+) (.*)$')
  if not token then return nil end
  olen = tonumber(olen)
  return token, exp, att, string.sub(rest, 1, olen), string.sub(rest, olen + 1)
end
local function lease_make(token, exp, att, owner, tenant)
  return token .. ' ' .. exp .. ' ' .. att .. ' ' .. #owner .. ' ' .. owner .. tenant
end
-- Wake-up tokens for idle fetchers blocked in BLPOP on K_WAKE (at most 16 kept).
local function wake(n)
  if n > 0 then
    if n > 16 then n = 16 end
    local t = {}
    for i = 1, n do t[i] = '1' end
    redis.call('LPUSH', K_WAKE, unpack(t))
    redis.call('LTRIM', K_WAKE, 0, 15)
  end
end
)LUA";

// ARGV: prefix, now, n, then n x (id, doc, tenant, priority, run_at, idempotency_key,
// delayed '1'/'0'). Returns {id1, created1, id2, created2, ...}.
const char* const kEnqueue = R"LUA(
local n = tonumber(ARGV[3])
local out = {}
local ready = 0
local delayed_n = 0
for i = 0, n - 1 do
  local b = 4 + i * 7
  local id, doc, tenant, prio, run_at, idem, delayed =
    ARGV[b], ARGV[b + 1], ARGV[b + 2], ARGV[b + 3], ARGV[b + 4], ARGV[b + 5], ARGV[b + 6]
  local existing = nil
  if idem ~= '' then
    local eid = redis.call('HGET', K_IDEM, idem)
    if eid and redis.call('EXISTS', jk(eid)) == 1 then existing = eid end
  end
  if existing then
    out[#out + 1] = existing
    out[#out + 1] = 0
  else
    local seq = redis.call('INCR', K_SEQ)
    redis.call('HSET', jk(id), 'doc', doc, 'state', 'queued', 'tenant', tenant, 'priority', prio,
      'run_at', run_at, 'seq', seq, 'attempts', 0, 'created_at', NOW_S, 'updated_at', NOW_S, 'idem', idem)
    if idem ~= '' then redis.call('HSET', K_IDEM, idem, id) end
    if delayed == '1' then
      redis.call('ZADD', K_SCHED, run_at, id)
      delayed_n = delayed_n + 1
    else
      ready_add(id, prio, run_at, seq)
      ready = ready + 1
    end
    count_later(tenant, 'queued', 1)
    out[#out + 1] = id
    out[#out + 1] = 1
  end
end
count_flush()
-- A delayed job also wakes one waiter, so it re-reads the next due time.
if ready == 0 and delayed_n > 0 then ready = 1 end
wake(ready)
return out
)LUA";

// ARGV: prefix, now, max, owner, lease_expires_at, token_prefix, then optionally n and
// n x 6 settle arguments (settle_many()): the settles the handle had waiting, applied
// before anything is taken, so the jobs they free make room for this fetch's.
// Returns {next_due ('' when none or when jobs were taken), {jobs}, {settle results}};
// {jobs} holds 7 elements per job, one job after the other: id, doc, tenant, attempts
// (after this fetch), run_at, created_at, reason (nil where the hash has no such field;
// HMGET's nil is Lua's false, which keeps the array whole). The lease token is ARGV[6] for
// every job.
const char* const kFetch = R"LUA(
local settled, settle_wakes = {}, 0
local n_settle = tonumber(ARGV[7] or '0')
if n_settle > 0 then
  settled, settle_wakes = settle_many(8, n_settle)
  if not settled then return redis.error_reply(settle_wakes) end
end
-- Q1: expired leases become fetchable again (attempts kept).
local expired = redis.call('ZRANGEBYSCORE', K_LEASED, '-inf', NOW_S, 'LIMIT', 0, 1000)
for _, id in ipairs(expired) do
  redis.call('ZREM', K_LEASED, id)
  local token, exp, att, owner, tenant = lease_parse(redis.call('HGET', K_LEASES, id))
  if token then
    redis.call('HDEL', K_LEASES, id)
    local k = jk(id)
    local h = redis.call('HMGET', k, 'state', 'priority', 'run_at', 'seq')
    if h[1] == 'queued' then
      redis.call('HSET', k, 'attempts', att, 'updated_at', NOW_S)
      ready_add(id, h[2], h[3], h[4])
    end
    move(tenant, 'running', 'queued')
  else
    -- A job leased by an older version (state 'running' and the lease in the job hash):
    -- redelivered the same way, so an upgrade leaves no job in flight forever (W8).
    local k = jk(id)
    local h = redis.call('HMGET', k, 'state', 'tenant', 'priority', 'run_at', 'seq')
    if h[1] == 'running' then
      redis.call('HSET', k, 'state', 'queued', 'updated_at', NOW_S)
      redis.call('HDEL', k, 'lease_owner', 'lease_token', 'lease_expires_at', 'lease')
      ready_add(id, h[3], h[4], h[5])
      move(h[2], 'running', 'queued')
    end
  end
end
-- Q4: delayed jobs that are due join the ready set. Entries written by an outside
-- producer (only a `doc` field, docs/wire-format.md) are adopted here.
local due = redis.call('ZRANGEBYSCORE', K_SCHED, '-inf', NOW_S, 'WITHSCORES', 'LIMIT', 0, 1000)
for i = 1, #due, 2 do
  local id, score = due[i], due[i + 1]
  redis.call('ZREM', K_SCHED, id)
  local k = jk(id)
  local h = redis.call('HMGET', k, 'state', 'priority', 'run_at', 'seq', 'doc')
  if h[1] == 'queued' then
    ready_add(id, h[2], h[3], h[4])
  elseif not h[1] then
    local tenant, prio, attempts, idem = '', 0, 0, ''
    local run_at = score
    if tonumber(score) <= 0 then run_at = NOW_S end
    if h[5] then
      local ok, d = pcall(cjson.decode, h[5])
      if ok and type(d) == 'table' then
        if type(d.tenant) == 'string' then tenant = d.tenant end
        if type(d.priority) == 'number' then prio = math.max(-1e9, math.min(1e9, math.floor(d.priority))) end
        if type(d.attempts) == 'number' then attempts = math.max(0, math.floor(d.attempts)) end
        if type(d.idempotency_key) == 'string' then idem = d.idempotency_key end
        if type(d.run_at) == 'number' then run_at = string.format('%.17g', d.run_at) end
      end
    end
    local seq = redis.call('INCR', K_SEQ)
    redis.call('HSET', k, 'state', 'queued', 'tenant', tenant, 'priority', prio, 'run_at', run_at, 'seq', seq,
      'attempts', attempts, 'created_at', NOW_S, 'updated_at', NOW_S, 'idem', idem)
    if idem ~= '' then redis.call('HSETNX', K_IDEM, idem, id) end
    count(tenant, 'queued', 1)
    ready_add(id, prio, run_at, seq)
  end
end
-- Q6: take up to max jobs in Q4 order. Every job of one call gets the same lease value
-- (one random token per call: fencing is per job, and a job is in one call at most).
-- (ZRANGE + ZREMRANGEBYRANK rather than ZPOPMIN: the scores are not needed, and formatting
-- each one as a double for the reply cost more than the second call.)
local max = tonumber(ARGV[3])
local taken = redis.call('ZRANGE', K_READY, 0, max - 1)
if #taken > 0 then redis.call('ZREMRANGEBYRANK', K_READY, 0, #taken - 1) end
local pre = ARGV[6] .. ' ' .. ARGV[5] .. ' '
local post = ' ' .. #ARGV[4] .. ' ' .. ARGV[4]
local exp = ARGV[5]
local jobs = {}
local leased = {}
local leases = {}
local per_tenant = {}
-- attempts + 1 without Lua's number-to-text formatting (a printf per job) in the usual cases
local NEXT = {['0'] = '1', ['1'] = '2', ['2'] = '3', ['3'] = '4', ['4'] = '5'}
local n = 0
for i = 1, #taken do
  local id = string.sub(taken[i], 34)
  -- priority is read from the document (never changed); details only matter to dead jobs
  local h = redis.call('HMGET', PREFIX .. id, 'state', 'tenant', 'attempts', 'doc', 'run_at', 'created_at', 'reason')
  if h[1] == 'queued' then
    local attempts = NEXT[h[3]] or tostring((tonumber(h[3]) or 0) + 1)
    local tenant = h[2] or ''
    n = n + 1
    leases[2 * n - 1] = id
    leases[2 * n] = pre .. attempts .. post .. tenant
    leased[2 * n - 1] = exp
    leased[2 * n] = id
    per_tenant[tenant] = (per_tenant[tenant] or 0) + 1
    -- id, doc, tenant, attempts, run_at, created_at, reason: one flat array, no table per job
    local b = 7 * (n - 1)
    jobs[b + 1], jobs[b + 2], jobs[b + 3], jobs[b + 4], jobs[b + 5], jobs[b + 6], jobs[b + 7] =
      id, h[4], h[2], attempts, h[5], h[6], h[7]
  end
end
if n > 0 then
  leases[2 * n + 1] = KEEP
  leases[2 * n + 2] = '1'
  leased[2 * n + 1] = 'inf'
  leased[2 * n + 2] = KEEP
  redis.call('HSET', K_LEASES, unpack(leases))
  redis.call('ZADD', K_LEASED, unpack(leased))
  for tenant, k in pairs(per_tenant) do
    count_later(tenant, 'queued', -k)
    count_later(tenant, 'running', k)
  end
end
count_flush()
-- Nothing left to signal: drop stale wake-up tokens (taking fewer than asked emptied the
-- set); else wake waiters for the jobs this call's retries made ready (as a
-- settle_batch call and the fetch after it would leave the tokens).
if #taken < max or redis.call('ZCARD', K_READY) == 0 then
  redis.call('DEL', K_WAKE)
elseif settle_wakes > 0 then
  wake(settle_wakes)
end
-- The earliest time something may become ready (only read by a fetch that got nothing).
local next_due = ''
if #jobs == 0 then
  local s = redis.call('ZRANGE', K_SCHED, 0, 0, 'WITHSCORES')
  if s[2] then next_due = s[2] end
  local l = redis.call('ZRANGE', K_LEASED, 0, 0, 'WITHSCORES')
  if l[2] and l[1] ~= KEEP and (next_due == '' or tonumber(l[2]) < tonumber(next_due)) then next_due = l[2] end
end
return {next_due, jobs, settled}
)LUA";

// ARGV: prefix, now, op, id, token, op args. Fenced by the lease token (Q3): returns 1, or
// 0 when the job is not running under that token (stale).
//   complete: result_json, latency_s     retry: run_at, reason, delayed '1'/'0'
//   fail: reason, details_json           heartbeat: lease_expires_at
const char* const kSettle = R"LUA(
local op, id, token = ARGV[3], ARGV[4], ARGV[5]
local k = jk(id)
local tok, exp, att, owner, tenant = lease_parse(redis.call('HGET', K_LEASES, id))
if not tok or tok ~= token then return 0 end
if op == 'heartbeat' then
  redis.call('HSET', K_LEASES, id, lease_make(token, ARGV[6], att, owner, tenant))
  redis.call('ZADD', K_LEASED, ARGV[6], id)
  return 1
end
if op ~= 'complete' and op ~= 'retry' and op ~= 'fail' then return redis.error_reply('ERR unknown settle op ' .. op) end
redis.call('ZREM', K_LEASED, id)
redis.call('HDEL', K_LEASES, id)
if op == 'complete' then
  redis.call('HSET', k, 'state', 'succeeded', 'result', ARGV[6], 'latency_s', ARGV[7], 'updated_at', NOW_S, 'attempts', att)
  redis.call('RPUSH', K_SUCC, id)
  move(tenant, 'running', 'succeeded')
elseif op == 'retry' then
  local h = redis.call('HMGET', k, 'priority', 'seq')
  redis.call('HSET', k, 'state', 'queued', 'run_at', ARGV[6], 'reason', ARGV[7], 'updated_at', NOW_S, 'attempts', att)
  if ARGV[8] == '1' then
    redis.call('ZADD', K_SCHED, ARGV[6], id)
  else
    ready_add(id, h[1], ARGV[6], h[2])
  end
  wake(1)
  move(tenant, 'running', 'queued')
else
  redis.call('HSET', k, 'state', 'dead', 'reason', ARGV[6], 'details', ARGV[7], 'updated_at', NOW_S, 'attempts', att)
  redis.call('ZADD', K_DEAD, NOW_S, id)
  move(tenant, 'running', 'dead')
end
return 1
)LUA";

// settle_many(base, n): settles n jobs whose arguments start at ARGV[base], 6 each:
// (op, id, token, a1, a2, a3) with op complete / retry / fail and the op args of kSettle
// (unused ones ''). Each job is fenced by its own lease token (Q3), exactly as kSettle
// does. Returns {r1, ..., rn} (1 settled, 0 stale) and how many jobs it made ready again
// (retries: the caller wakes that many waiters), or nil and an error text, before writing
// anything, when an op is unknown. Count deltas go through count_later(): the caller
// flushes them (the script is atomic, so counts() never sees the difference).
const char* const kSettleMany = R"LUA(
local function settle_many(base, n)
  for i = 0, n - 1 do  -- refuse a bad op before writing anything
    local op = ARGV[base + i * 6]
    if op ~= 'complete' and op ~= 'retry' and op ~= 'fail' then
      return nil, 'ERR unknown settle op ' .. tostring(op)
    end
  end
  local out = {}
  local wakes = 0
  -- Per tenant: {succeeded, queued, dead} settled by this batch (count keys built once per
  -- tenant, not per job).
  local per_tenant = {}
  -- The leases of the whole batch are read with one HMGET; sorted-set and lease updates are
  -- gathered and sent as one command each at the end.
  local ids = {}
  for i = 0, n - 1 do ids[i + 1] = ARGV[base + 1 + i * 6] end
  local recs = redis.call('HMGET', K_LEASES, unpack(ids))
  local unleased, done, dead = {}, {}, {}
  local seen = {}
  for i = 0, n - 1 do
    local b = base + i * 6
    local op, id, token = ARGV[b], ARGV[b + 1], ARGV[b + 2]
    local tok, exp, att, owner, tenant = lease_parse(recs[i + 1])
    if not tok or tok ~= token or seen[id] then
      out[i + 1] = 0
    else
      seen[id] = true
      unleased[#unleased + 1] = id
      local k = PREFIX .. id
      local t = per_tenant[tenant]
      if not t then
        t = {0, 0, 0}
        per_tenant[tenant] = t
      end
      if op == 'complete' then
        redis.call('HSET', k, 'state', 'succeeded', 'result', ARGV[b + 3], 'latency_s', ARGV[b + 4], 'updated_at', NOW_S,
          'attempts', att)
        done[#done + 1] = id
        t[1] = t[1] + 1
      elseif op == 'retry' then
        local a1 = ARGV[b + 3]
        local r = redis.call('HMGET', k, 'priority', 'seq')
        redis.call('HSET', k, 'state', 'queued', 'run_at', a1, 'reason', ARGV[b + 4], 'updated_at', NOW_S, 'attempts', att)
        if ARGV[b + 5] == '1' then
          redis.call('ZADD', K_SCHED, a1, id)
        else
          ready_add(id, r[1], a1, r[2])
        end
        wakes = wakes + 1
        t[2] = t[2] + 1
      else
        redis.call('HSET', k, 'state', 'dead', 'reason', ARGV[b + 3], 'details', ARGV[b + 4], 'updated_at', NOW_S,
          'attempts', att)
        dead[#dead + 1] = NOW_S
        dead[#dead + 1] = id
        t[3] = t[3] + 1
      end
      out[i + 1] = 1
    end
  end
  for tenant, t in pairs(per_tenant) do
    count_later(tenant, 'succeeded', t[1])
    count_later(tenant, 'queued', t[2])
    count_later(tenant, 'dead', t[3])
    count_later(tenant, 'running', -(t[1] + t[2] + t[3]))
  end
  if #unleased > 0 then
    redis.call('ZREM', K_LEASED, unpack(unleased))
    redis.call('HDEL', K_LEASES, unpack(unleased))
  end
  if #done > 0 then redis.call('RPUSH', K_SUCC, unpack(done)) end
  if #dead > 0 then redis.call('ZADD', K_DEAD, unpack(dead)) end
  return out, wakes
end
)LUA";

// ARGV: prefix, now, n, then n x (op, id, token, a1, a2, a3): settle_many(). Returns
// {r1, ..., rn}: 1 settled, 0 stale.
const char* const kSettleBatch = R"LUA(
local out, wakes = settle_many(4, tonumber(ARGV[3]))
if not out then return redis.error_reply(wakes) end
count_flush()
wake(wakes)
return out
)LUA";

// ARGV: prefix, now, op, op args.
//   counts:                          -> {#ready, #scheduled, #leased, #succeeded, #dead, HGETALL counts}
//   cancel: id, tenant_given, tenant -> 1 | 0
//   requeue: tenant_given, tenant, ids... (none: every dead job) -> n
//   purge: cutoff                    -> n
//   list: state ('' any), tenant_given, tenant, limit -> {job fields..., ...}
const char* const kAdmin = R"LUA(
local op = ARGV[3]
if op == 'counts' then
  local running = redis.call('ZCARD', K_LEASED)
  if redis.call('ZSCORE', K_LEASED, KEEP) then running = running - 1 end
  return {redis.call('ZCARD', K_READY), redis.call('ZCARD', K_SCHED), running,
          redis.call('ZCARD', K_DONE) + redis.call('LLEN', K_SUCC), redis.call('ZCARD', K_DEAD),
          redis.call('HGETALL', K_COUNT)}
elseif op == 'cancel' then
  local id = ARGV[4]
  local k = jk(id)
  local h = redis.call('HMGET', k, 'state', 'tenant', 'run_at', 'seq', 'attempts')
  if not h[1] then return 0 end
  if ARGV[5] == '1' and h[2] ~= ARGV[6] then return 0 end
  local from = h[1]
  local tok, exp, att = lease_parse(redis.call('HGET', K_LEASES, id))
  if tok then
    from = 'running'
    redis.call('ZREM', K_LEASED, id)
    redis.call('HDEL', K_LEASES, id)
  elseif h[1] == 'queued' then
    ready_rem(id, h[3], h[4])
    redis.call('ZREM', K_SCHED, id)
  else
    return 0
  end
  redis.call('HSET', k, 'state', 'dead', 'reason', 'cancelled', 'updated_at', NOW_S, 'attempts', att or h[5] or 0)
  redis.call('ZADD', K_DEAD, NOW_S, id)
  move(h[2], from, 'dead')
  return 1
elseif op == 'requeue' then
  local ids = {}
  if #ARGV >= 6 then
    for i = 6, #ARGV do ids[#ids + 1] = ARGV[i] end
  else
    ids = redis.call('ZRANGE', K_DEAD, 0, -1)
  end
  local n = 0
  for _, id in ipairs(ids) do
    local k = jk(id)
    local h = redis.call('HMGET', k, 'state', 'tenant', 'priority', 'seq')
    if h[1] == 'dead' and (ARGV[4] ~= '1' or h[2] == ARGV[5]) then
      redis.call('ZREM', K_DEAD, id)
      redis.call('HSET', k, 'state', 'queued', 'attempts', 0, 'run_at', NOW_S, 'updated_at', NOW_S)
      ready_add(id, h[3], NOW_S, h[4])
      move(h[2], 'dead', 'queued')
      n = n + 1
    end
  end
  wake(n)
  return n
elseif op == 'purge' then
  local n = 0
  local cutoff = tonumber(ARGV[4])
  -- A settled job older than the cutoff goes with its idempotency key; true when gone.
  local function drop(id, state)
    local k = jk(id)
    local h = redis.call('HMGET', k, 'state', 'tenant', 'idem')
    if h[1] ~= state then return false end
    if h[3] and h[3] ~= '' and redis.call('HGET', K_IDEM, h[3]) == id then redis.call('HDEL', K_IDEM, h[3]) end
    redis.call('DEL', k)
    count(h[2], h[1], -1)
    n = n + 1
    return true
  end
  for _, pair in ipairs({{K_DONE, 'succeeded'}, {K_DEAD, 'dead'}}) do
    local ids = redis.call('ZRANGEBYSCORE', pair[1], '-inf', ARGV[4])
    for _, id in ipairs(ids) do
      drop(id, pair[2])
      redis.call('ZREM', pair[1], id)
    end
  end
  -- K_SUCC is in completion order, by the clocks of the workers that completed the jobs.
  -- Take chunks off the head, purge the old jobs, put the younger ones back at the head
  -- in their order, and stop after a chunk with no old job: a job stamped by a worker
  -- whose clock runs ahead then delays nothing behind it.
  local kept = {}
  while true do
    local ids = redis.call('LRANGE', K_SUCC, 0, 199)
    if #ids == 0 then break end
    local any_old = false
    for _, id in ipairs(ids) do
      local h = redis.call('HMGET', jk(id), 'state', 'updated_at')
      if h[1] == 'succeeded' and (tonumber(h[2]) or 0) > cutoff then
        kept[#kept + 1] = id
      else
        if h[1] == 'succeeded' then drop(id, 'succeeded') end
        any_old = true
      end
    end
    redis.call('LTRIM', K_SUCC, #ids, -1)
    if not any_old then break end
  end
  for i = #kept, 1, -1 do redis.call('LPUSH', K_SUCC, kept[i]) end
  return n
elseif op == 'list' then
  local want, tg, tenant, limit = ARGV[4], ARGV[5] == '1', ARGV[6], tonumber(ARGV[7])
  local sources = {{K_READY, 'queued', true}, {K_SCHED, 'queued', false}, {K_LEASED, 'running', false},
                   {K_DONE, 'succeeded', false}, {K_SUCC, 'succeeded', false, true}, {K_DEAD, 'dead', false}}
  local out = {}
  for _, s in ipairs(sources) do
    if want == '' or want == s[2] then
      local start = 0
      while #out < limit do
        local ms
        if s[4] then ms = redis.call('LRANGE', s[1], start, start + 199)
        else ms = redis.call('ZRANGE', s[1], start, start + 199) end
        if #ms == 0 then break end
        for _, m in ipairs(ms) do
          local id = m
          if s[3] then id = string.sub(m, 34) end
          local k = jk(id)
          local h = redis.call('HMGET', k, 'state', 'tenant')
          local rec = redis.call('HGET', K_LEASES, id)
          local st = h[1]
          if rec and st == 'queued' then st = 'running' end
          if st == s[2] and ((not tg) or h[2] == tenant) then
            local f = redis.call('HGETALL', k)
            f[#f + 1] = 'id'
            f[#f + 1] = id
            if rec then
              f[#f + 1] = 'lease'
              f[#f + 1] = rec
            end
            out[#out + 1] = f
            if #out >= limit then break end
          end
        end
        start = start + 200
      end
    end
  end
  return out
end
return redis.error_reply('ERR unknown admin op ' .. tostring(op))
)LUA";

}  // namespace

const std::string& script_text(Script s) {
  static const std::array<std::string, kScriptCount> texts = {
      std::string(kPrelude) + kEnqueue, std::string(kPrelude) + kSettleMany + kFetch, std::string(kPrelude) + kSettle,
      std::string(kPrelude) + kAdmin, std::string(kPrelude) + kSettleMany + kSettleBatch};
  return texts[static_cast<std::size_t>(s)];
}

std::string_view script_name(Script s) {
  switch (s) {
    case Script::enqueue: return "enqueue";
    case Script::fetch: return "fetch";
    case Script::settle: return "settle";
    case Script::admin: return "admin";
    case Script::settle_batch: return "settle_batch";
  }
  return "?";
}

}  // namespace penguiflow::queue::redis
