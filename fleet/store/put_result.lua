-- Write a result unless the run is finished or the job's result is sealed (a status in ARGV[8..]):
-- then it is kept as a late attempt for the record. Marks the run finished when it was the last.
-- One script, so that a late result and the finalisation cannot interleave.
-- A job id that is not one of the run's jobs is refused (-1): it would be counted towards the run's end.
-- With the ledger's keys given (ARGV[5] not ''), the ledger's count of a stored outcome
-- (fleet.store.ledger.count_finished) is written first, whatever becomes of the result, in the
-- same round trip; those writes never fail the script (a key of another type: its error text
-- comes back, the other writes are made).
-- KEYS: results, jobs, finished, late[, run ledger, worker stats, running]
-- ARGV: job_id, value, only_if_absent ('1'/'0'), now, ledger field ('' for none), stats ttl,
--       running token, sealed...
-- Returns {written (1, 0, or -1), ledger (0, or the error text of a ledger write that failed)}.
local results, jobs, finished, late = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local job_id, value, only_if_absent, now = ARGV[1], ARGV[2], ARGV[3] == '1', ARGV[4]
local ledger = 0
if ARGV[5] ~= '' then
  local function write(...)
    local reply = redis.pcall(...)
    if type(reply) == 'table' and reply.err and ledger == 0 then ledger = reply.err end
  end
  write('HINCRBY', KEYS[5], ARGV[5], 1)
  write('HINCRBY', KEYS[6], 'finished', 1)
  write('HSET', KEYS[6], 'last_result_at', now)
  write('EXPIRE', KEYS[6], ARGV[6])
  write('LREM', KEYS[7], 0, ARGV[7])
end
local function put()
  if redis.call('EXISTS', jobs) == 0 then
    return 0  -- the run is gone (pruned): write nothing that nobody would clean up
  end
  if redis.call('HEXISTS', jobs, job_id) == 0 then
    return -1  -- not a job of this run
  end
  if redis.call('EXISTS', finished) == 1 then
    redis.call('RPUSH', late, value)
    return 0
  end
  local previous = redis.call('HGET', results, job_id)
  if previous then
    if only_if_absent then return 0 end
    local ok, decoded = pcall(cjson.decode, previous)  -- a corrupt record is replaced, never fatal
    local status = nil
    if ok and type(decoded) == 'table' then status = decoded['status'] end
    for i = 8, #ARGV do
      if status == ARGV[i] then
        redis.call('RPUSH', late, value)
        return 0
      end
    end
  end
  redis.call('HSET', results, job_id, value)
  if redis.call('HLEN', results) >= redis.call('HLEN', jobs) then
    redis.call('SET', finished, now, 'NX')
  end
  return 1
end
return {put(), ledger}
