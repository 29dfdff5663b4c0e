-- Shared by the load scripts (wrk runs each script in every thread; `done` runs once, in the main
-- state). Counts the answers by status in each thread and prints, at the end, one `result` line
-- (wrk's own counters and latency percentiles, microseconds) and one `status CODE N` line per
-- status seen, for bench/load.sh to read.
statuses = {}
local threads = {}

function setup(thread)
    thread:set("thread_index", #threads + 1)
    table.insert(threads, thread)
end

function count_status(status)
    statuses[status] = (statuses[status] or 0) + 1
end

response = function(status, headers, body)
    count_status(status)
end

function done(summary, latency, requests)
    local all = {}
    for _, thread in ipairs(threads) do
        for status, n in pairs(thread:get("statuses")) do
            all[status] = (all[status] or 0) + n
        end
    end
    local e = summary.errors
    io.write(string.format(
        "result requests=%d seconds=%.3f connect=%d read=%d write=%d timeout=%d p50_us=%d p90_us=%d p99_us=%d p999_us=%d max_us=%d\n",
        summary.requests, summary.duration / 1e6, e.connect, e.read, e.write, e.timeout,
        latency:percentile(50), latency:percentile(90), latency:percentile(99),
        latency:percentile(99.9), latency.max))
    for status, n in pairs(all) do
        io.write(string.format("status %d %d\n", status, n))
    end
    if extra_done then extra_done(threads) end
end
