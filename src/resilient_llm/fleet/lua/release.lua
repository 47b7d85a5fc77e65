-- KEYS: brk. ARGV: 1 worker. Frees the probe if this worker holds it.
if redis.call('HGET', KEYS[1], 'ph') == ARGV[1] then
  redis.call('HDEL', KEYS[1], 'ph', 'pe')
  return 1
end
return 0
