-- One new host per request (a registration), spread over 100 services.
local counter = 0
request = function()
  counter = counter + 1
  local body = string.format('{"ip_address": "10.%d.%d.%d", "port": 8080, "ttl": 3600}',
    math.floor(counter / 65536) % 256, math.floor(counter / 256) % 256, counter % 256)
  return wrk.format("POST", string.format("/edsservice/writes-%d/hosts", counter % 100),
    {["Content-Type"] = "application/json"}, body)
end
