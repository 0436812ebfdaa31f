-- wrk scenario: PATCH /users/{id} replacing roles (alternating sets: every PATCH is a change).
-- Environment: TOKEN (bearer token), IDS (file with one user id per line). See run.sh.
local token = os.getenv("TOKEN") or ""
local ids = {}
for line in io.lines(os.getenv("IDS")) do
  ids[#ids + 1] = line
end
wrk.method = "PATCH"
wrk.headers["Authorization"] = "Bearer " .. token
wrk.headers["Content-Type"] = "application/scim+json"

local bodies = {
  '{"schemas":["urn:ietf:params:scim:api:messages:2.0:PatchOp"],"Operations":[{"op":"replace","path":"roles","value":[{"value":"Agent"},{"value":"Queue Member"}]}]}',
  '{"schemas":["urn:ietf:params:scim:api:messages:2.0:PatchOp"],"Operations":[{"op":"replace","path":"roles","value":[{"value":"Supervisor"}]}]}',
}
local counter = 0
request = function()
  counter = counter + 1
  local id = ids[math.random(1, #ids)]
  return wrk.format(nil, "/api/v2/scim/v2/users/" .. id, nil, bodies[counter % 2 + 1])
end
