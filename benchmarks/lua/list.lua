-- GET /users?limit=50 (the URL carries the path); only the shared reporter is needed.
local report = require("report")

done = report.done
