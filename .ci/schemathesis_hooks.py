"""schemathesis hooks for .ci/schemathesis.sh (loaded through SCHEMATHESIS_HOOKS).

schemathesis has no serializer for NDJSON bodies: the document describes an NDJSON batch as a
string (its lines), so the generated value is sent as its UTF-8 bytes; a value of another type
(negative cases) as its JSON text.
"""

import json

import schemathesis


@schemathesis.serializer("application/x-ndjson")
def ndjson(ctx, value):
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode("utf-8", "surrogatepass")
    return json.dumps(value).encode("utf-8")
