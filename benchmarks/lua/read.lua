-- GET /items/{pubid} with the owner's bearer token; args[1] = seed data file (Lua table).
local report = require("report")
local requests = {}

function init(args)
  report.seed()
  for _, user in ipairs(dofile(args[1])) do
    for _, item in ipairs(user.items) do
      requests[#requests + 1] = wrk.format(
        "GET", "/items/" .. item, { ["Authorization"] = "Bearer " .. user.token })
    end
  end
end

function request()
  return requests[math.random(#requests)]
end

done = report.done
