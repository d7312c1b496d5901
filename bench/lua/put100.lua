-- Whole-service PUTs of 100 hosts, each one a real change (the ports move), over 20 services.
local counter = 0
request = function()
  counter = counter + 1
  local hosts = {}
  for i = 1, 100 do
    hosts[i] = string.format('{"ip_address": "10.1.%d.%d", "port": %d}', math.floor(i / 256), i % 256, 1000 + counter % 50000)
  end
  local body = '{"hosts": [' .. table.concat(hosts, ",") .. ']}'
  return wrk.format("PUT", string.format("/edsservice/bulk-%d", counter % 20),
    {["Content-Type"] = "application/json"}, body)
end
