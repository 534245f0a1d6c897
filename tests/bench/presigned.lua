-- wrk script for scripts/bench-receiver: cycles through pre-signed Clerk
-- events (a Lua file written by `bench-tool presign`, given after `--`).
local requests = {}
local i = 0

function init(args)
  local reqs = dofile(args[1])
  for _, r in ipairs(reqs) do
    requests[#requests + 1] = wrk.format("POST", "/webhooks/clerk", {
      ["svix-id"] = r.id,
      ["svix-timestamp"] = r.ts,
      ["svix-signature"] = r.sig,
      ["Content-Type"] = "application/json",
    }, r.body)
  end
  i = math.random(#requests)  -- threads start at different places
end

function request()
  i = i % #requests + 1
  return requests[i]
end
