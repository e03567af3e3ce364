-- Uniform random ids, each connection pausing DELAY_MS before every request: an approximately
-- fixed offered rate of connections * 1000 / (DELAY_MS + latency) requests/s. wrk2 is not
-- available; this is a closed loop, so a stall delays later requests (coordinated omission):
-- its p99 is a lower bound of what an open-loop generator would report.
local products = tonumber(os.getenv("PRODUCTS") or "1000000")
local delay_ms = tonumber(os.getenv("DELAY_MS") or "10")

function init(args)
  math.randomseed(os.time() * 1000 + (tonumber(tostring({}):match("0x(%x+)"), 16) or 0) % 1000)
end

function delay()
  return delay_ms
end

function request()
  return wrk.format("GET", "/products/" .. math.random(1, products) .. "/related")
end
