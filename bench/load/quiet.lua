-- The quiet organizations: each request is the next organization's token (TOKENS, one per line)
-- and the next of four everyday reads; then a pause of DELAY_MS, so the load stays well inside
-- every organization's limits.
dofile(os.getenv("LOAD_DIR") .. "/tally.lua")

local tokens, orgs = {}, {}
local delay_ms = tonumber(os.getenv("DELAY_MS") or "40")
local n = 0

function init(args)
    for line in io.lines(os.getenv("TOKENS")) do
        local org, token = line:match("^(%S+) (%S+)$")
        table.insert(orgs, org)
        table.insert(tokens, token)
    end
    -- Threads start at different organizations.
    n = (thread_index or 1) * 7919
end

local function path(kind, org)
    if kind == 0 then
        return "/express/usage/month"
    elseif kind == 1 then
        return "/express/usage/month?per_page=25&filter=month%20ge%20%272024-01%27"
    elseif kind == 2 then
        return "/2010-04-01/Accounts/" .. org .. "/Usage/Records/Monthly.json?StartDate=2023-01-01&EndDate=2024-12-31"
    else
        return "/express/usage/events?per_page=50&start_date=2023-01-01&end_date=2025-01-01"
    end
end

request = function()
    n = n + 1
    local i = n % #tokens + 1
    return wrk.format("GET", path(math.floor(n / #tokens) % 4, orgs[i]), {
        ["Authorization"] = "Bearer " .. tokens[i],
    })
end

delay = function()
    return delay_ms
end
