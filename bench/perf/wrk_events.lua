-- wrk script for perf/ingest.py: POST /v1/events with realistic appointment.booked bodies.
--   wrk -t2 -c64 -d15s -s bench/perf/wrk_events.lua http://127.0.0.1:PORT/v1/events -- PREFIX TOKEN
-- Each request carries a unique event_id (prefix, thread, counter). done() prints one JSON
-- line the benchmark reads.

local threads = {}
local counter = 1

function setup(thread)
  thread:set("tid", counter)
  counter = counter + 1
  table.insert(threads, thread)
end

function init(args)
  prefix = args[1] or "evt"
  token = args[2] or ""
  n = 0
  statuses = {}
  math.randomseed(tid * 7919)
  wrk.method = "POST"
  wrk.headers["Content-Type"] = "application/json"
  if token ~= "" then
    wrk.headers["Authorization"] = "Bearer " .. token
  end
end

local types = {"video", "in_person", "phone"}
local zones = {"Europe/London", "Europe/Paris", "America/New_York", "UTC"}

function request()
  n = n + 1
  local patient = math.random(1, 20000)
  local day = math.random(1, 28)
  local hour = math.random(8, 17)
  local body = string.format(
    '{"event_id":"%s-t%d-%d","type":"appointment.booked","occurred_at":"%s",' ..
    '"data":{"appointment":{"id":"%s-a%d-%d","patient_id":%d,"type":"%s",' ..
    '"appointment_type_id":"type_%d","starts_at":"2030-03-%02dT%02d:00:00Z",' ..
    '"ends_at":"2030-03-%02dT%02d:30:00Z","practitioner_id":%d},' ..
    '"patient":{"id":%d,"email":"patient%d@example.com","phone":"+4477009%05d",' ..
    '"first_name":"Ada","last_name":"Lovelace","timezone":"%s","tags":["vip","new"]}}}',
    prefix, tid, n, os.date("!%Y-%m-%dT%H:%M:%SZ"),
    prefix, tid, n, patient, types[math.random(1, 3)],
    math.random(1, 12), day, hour, day, hour, math.random(1, 40),
    patient, patient, patient, zones[math.random(1, 4)])
  return wrk.format(nil, nil, nil, body)
end

function response(status, headers, body)
  statuses[status] = (statuses[status] or 0) + 1
end

function done(summary, latency, requests)
  local errors = summary.errors.connect + summary.errors.read + summary.errors.write
    + summary.errors.status + summary.errors.timeout
  io.write(string.format(
    '{"requests":%d,"all_requests":%d,"errors":%d,"ok":%d,"seconds":%.3f,' ..
    '"p50_ms":%.3f,"p95_ms":%.3f,"p99_ms":%.3f,"max_ms":%.3f,' ..
    '"socket_errors":{"connect":%d,"read":%d,"write":%d,"timeout":%d},"status_errors":%d}\n',
    summary.requests, summary.requests, errors, summary.requests - errors,
    summary.duration / 1e6,
    latency:percentile(50) / 1000, latency:percentile(95) / 1000,
    latency:percentile(99) / 1000, latency.max / 1000,
    summary.errors.connect, summary.errors.read, summary.errors.write,
    summary.errors.timeout, summary.errors.status))
end
