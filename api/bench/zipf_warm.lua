-- Cache warm-up for the Zipf measurement: requests the ids of Zipf ranks 1, 2, 3, ... in turn
-- (the same rank-to-id bijection as zipf.lua), so after WARM_RANKS requests the cache holds the
-- hottest WARM_RANKS products: the state a long-running cache reaches under Zipf traffic. Run
-- with one wrk thread (-t1) so the ranks are not walked twice; past WARM_RANKS it starts over.
local products = tonumber(os.getenv("PRODUCTS") or "1000000")
local warm_ranks = tonumber(os.getenv("WARM_RANKS") or "300000")
local scatter = 999983
local rank = 0

function request()
  rank = rank % math.min(warm_ranks, products) + 1
  local id = ((rank - 1) * scatter) % products + 1
  return wrk.format("GET", "/products/" .. id .. "/related")
end
