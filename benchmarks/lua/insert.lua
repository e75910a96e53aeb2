-- POST /items for a random seeded user, as that user; args[1] = seed data file.
local report = require("report")
local requests = {}

function init(args)
  report.seed()
  for _, user in ipairs(dofile(args[1])) do
    requests[#requests + 1] = wrk.format("POST", "/items", {
      ["Authorization"] = "Bearer " .. user.token,
      ["Content-Type"] = "application/json",
    }, '{"name":"bench-insert","user_pubid":"' .. user.pubid .. '"}')
  end
end

function request()
  return requests[math.random(#requests)]
end

done = report.done
