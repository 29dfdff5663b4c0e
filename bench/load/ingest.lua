-- The steady ingest: BATCH new events per POST for the accounts of ACCOUNT_PREFIX (1..5), each
-- with an id of its own and quantity 1.5, then a pause of DELAY_MS. Sums the `accepted` counts
-- of the answers, so bench/load.sh can check the totals afterwards.
dofile(os.getenv("LOAD_DIR") .. "/tally.lua")

local token = os.getenv("TOKEN")
local prefix = os.getenv("ACCOUNT_PREFIX")
local batch = tonumber(os.getenv("BATCH") or "50")
local delay_ms = tonumber(os.getenv("DELAY_MS") or "100")
local run = os.getenv("RUN_ID") or tostring(os.time())
local n = 0
accepted = 0

request = function()
    n = n + 1
    local now = os.date("!%Y-%m-%dT%H:%M:%SZ")
    local events = {}
    for i = 1, batch do
        events[i] = string.format(
            '{"event_id":"load-%s-%d-%d-%d","account_id":"%s-%d","product_id":"TD-USG-P000",' ..
            '"aggr_product_id":"TD-AGG-0","type":"CALL","unit":"MINUTES","direction":"INBOUND",' ..
            '"occurred_at":"%s","quantity":"1.5","unit_price":"0.0085","currency":"USD"}',
            run, thread_index or 0, n, i, prefix, 1 + i % 5, now)
    end
    return wrk.format("POST", "/express/usage/events", {
        ["Authorization"] = "Bearer " .. token,
        ["Content-Type"] = "application/json",
    }, "[" .. table.concat(events, ",") .. "]")
end

response = function(status, headers, body)
    count_status(status)
    if status == 200 then
        accepted = accepted + tonumber(body:match('"accepted":%s*(%d+)') or "0")
    end
end

function extra_done(threads)
    local total = 0
    for _, thread in ipairs(threads) do
        total = total + thread:get("accepted")
    end
    io.write(string.format("accepted %d\n", total))
end

delay = function()
    return delay_ms
end
