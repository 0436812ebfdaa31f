"""Verifies webhook deliveries with the reference Standard Webhooks library (PyPI
`standardwebhooks`), an implementation independent of rolesync's.

Input on stdin (JSON):
    {"secret": "whsec_...", "messages": [{"headers": {"webhook-id": ...}, "body": "..."}]}
Output on stdout (JSON), one entry per message, in order:
    [{"ok": true, "error": null}, {"ok": false, "error": "No matching signature found"}]
Exits 0 whatever the verdicts; non-zero only when it cannot run.
"""

import json
import sys

from standardwebhooks import Webhook


def main() -> int:
    request = json.load(sys.stdin)
    hook = Webhook(request["secret"])
    results = []
    for message in request["messages"]:
        try:
            # json_parse=True also checks the body is JSON, as a receiver would.
            hook.verify(message["body"], message["headers"])
            results.append({"ok": True, "error": None})
        except Exception as e:  # the verdict, not a crash: report it to the test
            results.append({"ok": False, "error": f"{type(e).__name__}: {e}"})
    json.dump(results, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
