-- GET /items/{pubid} like read.lua, each connection pausing between requests so the total
-- rate is about a chosen one; args[1] = seed data file, args[2] = pause in milliseconds.
local report = require("report")
local requests = {}
local pause_ms = 0

function init(args)
  report.seed()
  pause_ms = tonumber(args[2])
  for _, user in ipairs(dofile(args[1])) do
    for _, item in ipairs(user.items) do
      requests[#requests + 1] = wrk.format(
        "GET", "/items/" .. item, { ["Authorization"] = "Bearer " .. user.token })
    end
  end
end

function delay()
  return pause_ms
end

function request()
  return requests[math.random(#requests)]
end

done = report.done
