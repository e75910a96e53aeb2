-- POST /users with a fresh name each time; args[1] = a name prefix unique to this run.
local report = require("report")
local prefix = "s"
local counter = 0
local headers = { ["Content-Type"] = "application/json" }

function init(args)
  report.seed()
  prefix = args[1] .. string.format("%04x", math.random(0, 65535)) .. "_"
end

function request()
  counter = counter + 1
  local body = '{"name":"' .. prefix .. counter .. '","password":"benchpass1234"}'
  return wrk.format("POST", "/users", headers, body)
end

done = report.done
