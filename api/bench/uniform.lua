-- Uniform random product ids in 1..PRODUCTS, the default limit.
local products = tonumber(os.getenv("PRODUCTS") or "1000000")

function init(args)
  math.randomseed(os.time() * 1000 + (tonumber(tostring({}):match("0x(%x+)"), 16) or 0) % 1000)
end

function request()
  return wrk.format("GET", "/products/" .. math.random(1, products) .. "/related")
end
