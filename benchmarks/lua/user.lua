-- GET /users/{pubid} without a token (a public read); args[1] = seed data file.
local report = require("report")
local requests = {}

function init(args)
  report.seed()
  for _, user in ipairs(dofile(args[1])) do
    requests[#requests + 1] = wrk.format("GET", "/users/" .. user.pubid)
  end
end

function request()
  return requests[math.random(#requests)]
end

done = report.done
