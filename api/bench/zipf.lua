-- Zipf-distributed product ids (s = 1.0) over 1..PRODUCTS.
-- Rank k is drawn by inverting the continuous approximation of the Zipf(1) CDF,
-- P(rank <= k) ~ ln(k + 1) / ln(N + 1), so P(rank = k) ~ 1/k; ranks are then scattered over the
-- id space by a bijection (multiplication by a prime coprime with N), so hot ids are not all
-- neighbours in the index.
local products = tonumber(os.getenv("PRODUCTS") or "1000000")
local log_n1 = math.log(products + 1)
local scatter = 999983

function init(args)
  math.randomseed(os.time() * 1000 + (tonumber(tostring({}):match("0x(%x+)"), 16) or 0) % 1000)
end

function request()
  local rank = math.floor(math.exp(math.random() * log_n1))
  if rank > products then rank = products end
  if rank < 1 then rank = 1 end
  local id = ((rank - 1) * scatter) % products + 1
  return wrk.format("GET", "/products/" .. id .. "/related")
end
