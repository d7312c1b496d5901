-- POSTs the file named by BODY_FILE (a captured Envoy poll) as fast as wrk can.
wrk.method = "POST"
local file = assert(io.open(os.getenv("BODY_FILE"), "rb"))
wrk.body = file:read("*a")
file:close()
wrk.headers["Content-Type"] = "application/json"
