-- A delivery begins (fleet.store.results.begin_attempt): whether the job already has a result,
-- and its delivery count (this one included). A job id that is not one of the run's jobs, or a
-- run that is gone, counts nothing. With the ledger's keys given (ARGV[3] == '1'), the first
-- delivery of a job without a result is also recorded as taken by this worker
-- (fleet.store.ledger.started): one round trip for both. The ledger's writes never fail the
-- script (a key of another type: its error text comes back, and the job goes on).
-- KEYS: results, attempts, jobs[, holders, ledger, worker stats, running, lease]
-- ARGV: job_id, counter, with_ledger ('1'/'0')[, worker, ledger field, now, stats ttl, token,
--       owner, lease ms, duplicate ledger field], and last the message's job text or ''
-- Returns {done, count, known, ours, ledger}: ledger 1 when recorded here, 0 when not, or the
-- error text of a write that failed (the others were made: the caller must not make them again).
-- With the ledger's keys, a delivery of a job without a result also takes the job's lease
-- (fleet.store.ledger: KEYS[8], ARGV[9] owner, ARGV[10] its TTL in ms) unless another owner
-- holds it (the key has not expired): then this delivery is a duplicate of a running one. It is not counted as a
-- delivery, counts as ARGV[11] ("<worker>\tduplicate") in the ledger and as duplicate in the
-- worker's stats, and {done, count, known, ours, 0, holder} comes back.
-- The last ARGV is the message's job as the run stores its jobs (fleet.jobs.stored_text), or ''
-- (nothing to compare): a job the run has whose stored text differs from it (a copy pushed onto a
-- queue with other content) counts nothing, writes nothing, and {0, 0, 1, 'differs', 0} comes back.
local job_id, counter = ARGV[1], ARGV[2]
local known = redis.call('EXISTS', KEYS[3])
local stored = redis.pcall('HGET', KEYS[3], job_id)
local ours = 1  -- jobs of another type: unknown, not refused
if stored == false then ours = 0 end
local claimed = ARGV[#ARGV]
if known == 1 and type(stored) == 'string' and claimed ~= '' and claimed ~= stored then
  return {0, 0, 1, 'differs', 0}
end
local done = redis.call('HEXISTS', KEYS[1], job_id)
-- A job that has its result is not delivered again: a copy pushed after it (a LOST job's, past the
-- deadline) must not turn 'never taken' into 'taken once'.
local count
if done == 1 then
  count = tonumber(redis.call('HGET', KEYS[2], counter) or '0')
else
  count = redis.call('HINCRBY', KEYS[2], counter, 1)
end
if known == 0 or ours == 0 then
  redis.call('HDEL', KEYS[2], counter)  -- the run is gone, or never had this job: no key left behind
  return {done, count, known, ours, 0}
end
if ARGV[3] ~= '1' or done == 1 then
  return {done, count, known, ours, 0}
end
local failed = nil
local function write(...)
  local reply = redis.pcall(...)
  if type(reply) == 'table' and reply.err then failed = failed or reply.err end
end
-- The first delivery (count 1) finds no lease: a lease is only taken by a delivery counted before.
local owner = count > 1 and redis.pcall('GET', KEYS[8])
if type(owner) == 'string' and owner ~= ARGV[9] then
  redis.call('HINCRBY', KEYS[2], counter, -1)  -- not a delivery of the job: it runs nothing
  write('HINCRBY', KEYS[5], ARGV[11], 1)
  write('HINCRBY', KEYS[6], 'duplicate', 1)
  write('EXPIRE', KEYS[6], ARGV[7])
  return {done, count - 1, known, ours, 0, owner}
end
write('SET', KEYS[8], ARGV[9], 'PX', ARGV[10])
if count > 1 then
  return {done, count, known, ours, 0}
end
write('HSET', KEYS[4], job_id, ARGV[4])
write('HINCRBY', KEYS[5], ARGV[5], 1)
write('HINCRBY', KEYS[6], 'received', 1)
write('HSET', KEYS[6], 'last_received_at', ARGV[6])
write('EXPIRE', KEYS[6], ARGV[7])
write('LPUSH', KEYS[7], ARGV[8])
return {done, count, known, ours, failed or 1}
