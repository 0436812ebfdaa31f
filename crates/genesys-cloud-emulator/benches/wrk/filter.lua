-- wrk scenario: GET /users?filter=externalId eq "EMP-nnnnnn" on random seeded users.
-- Environment: TOKEN (bearer token), USERS (seeded users, default 100000). See run.sh.
local token = os.getenv("TOKEN") or ""
local users = tonumber(os.getenv("USERS") or "100000")
wrk.headers["Authorization"] = "Bearer " .. token

local counter = 0
request = function()
  counter = counter + 1
  local n = (counter * 7919 + math.random(0, users)) % users + 1
  return wrk.format("GET", string.format("/api/v2/scim/v2/users?filter=externalId%%20eq%%20%%22EMP-%06d%%22", n))
end
