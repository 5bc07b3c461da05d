-- wrk script for bench/run.py: POST the JSON body given after `--` to every connection.
-- Usage: wrk -s bench/intake.lua URL -- '<json body>'
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"

function init(args)
  -- wrk.init formats the request after this runs, so the body given here is the one sent.
  wrk.body = args[1]
end
