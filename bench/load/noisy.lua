-- The noisy organization: deep pages of 250 rows, ordered by a field no index serves, with a
-- filter never seen before on every request (no cache can help), as fast as DELAY_MS allows on
-- each connection. TOKEN is its read token; PAGES the number of 250-row pages it holds.
dofile(os.getenv("LOAD_DIR") .. "/tally.lua")

local token = os.getenv("TOKEN")
local pages = tonumber(os.getenv("PAGES") or "2880")
local delay_ms = tonumber(os.getenv("DELAY_MS") or "80")
local orders = { "total_amount:desc", "number_of_units:asc", "description:asc", "price:desc",
                 "wallet_name:asc,total_amount:asc" }
local n = 0

function init(args)
    math.randomseed(os.time() + (thread_index or 1) * 104729)
end

request = function()
    n = n + 1
    local page = math.random(math.floor(pages / 2), pages)
    local filter = string.format("product_id ne 'noise-%d-%d-%d'", thread_index or 0, n, math.random(1, 1e9))
    return wrk.format("GET", string.format("/express/usage/month?per_page=250&page=%d&order_by=%s&filter=%s",
        page, orders[n % #orders + 1], (filter:gsub("[^%w%-%._~]", function(c)
            return string.format("%%%02X", string.byte(c))
        end))), { ["Authorization"] = "Bearer " .. token })
end

delay = function()
    return delay_ms
end
