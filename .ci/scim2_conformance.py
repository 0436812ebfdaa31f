"""Runs `scim2 test` (scim2-cli + scim2-tester) and judges its results against an exclusion list.

Usage: python scim2_conformance.py <genesys|rfc7644> <scim base url>   (the bearer header comes
from the SCIM_CLI_HEADERS environment variable, as scim2-cli reads it)

Two things are added around the stock `scim2 test` command, both documented in crates/genesys-cloud-emulator/README.md:

1. scim2-tester cannot generate a value for a `decimal` attribute (it falls back to a random
   string, which its own models then refuse), so every check that fills a Genesys user fails
   before reaching the server: the Genesys extension's routingSkills/routingLanguages
   `proficiency` is a decimal (0.0-5.0). A random float is generated instead.
2. Checks of features Genesys Cloud does not have are excluded (EXCLUSIONS, each with its
   reason). Every other result that is not SUCCESS (or SKIPPED) fails the run.
"""

import random
import re
import sys

import scim2_cli
import scim2_cli.test as cli_test
import scim2_tester.checkers.patch_add as patch_add
import scim2_tester.checkers.patch_replace as patch_replace
import scim2_tester.filling as filling
from scim2_tester import Status

EMPLOYEE = ("Genesys: the Employee role is on every user and cannot be removed, so `roles` "
            "always holds Employee besides the values the checker added/replaced/removed")
# (profiles, check title, regular expression on the reason, why it is excluded)
EXCLUSIONS = [
    (("genesys", "rfc7644"), "check_add_attribute", r"'roles'", EMPLOYEE),
    (("genesys", "rfc7644"), "check_replace_attribute", r"'roles'", EMPLOYEE),
    (("genesys", "rfc7644"), "check_remove_attribute", r"'roles'", EMPLOYEE),
    (("genesys", "rfc7644"), "check_remove_attribute", r"'active'",
     "Genesys: a user always has a state (active or inactive); removing `active` keeps it"),
    (("genesys", "rfc7644"), "check_add_attribute",
     r"genesys:purecloud:2\.0:User:(routingSkills|routingLanguages|externalIds)'",
     "checker defect: its base user already holds one value (it fills the required "
     "sub-attributes name/authority/value of these optional attributes when creating it), and "
     "it expects `add` to leave only the added value, where RFC 7644 3.5.2.1 appends"),
    (("genesys",), "object_list_with_attributes", r"could not find .* in filtered results",
     "Genesys: GET /users without a filter returns active users only; the checker's user has "
     "a random `active` and is inactive half of the time"),
]

_original = filling.generate_random_value


def _generate_random_value(context, path, mutability=None, required=None):
    value = _original(context, path, mutability=mutability, required=required)
    binding = path.resolve()
    if binding is not None and binding.target_type is float and value is not None:
        number = round(random.uniform(0.0, 5.0), 1)
        value = [number] if isinstance(value, list) else number
    return value


filling.generate_random_value = _generate_random_value
patch_add.generate_random_value = _generate_random_value
patch_replace.generate_random_value = _generate_random_value

_results = []
_check_server = cli_test.check_server


def _capturing_check_server(*args, **kwargs):
    results = _check_server(*args, **kwargs)
    _results.extend(results)
    return results


cli_test.check_server = _capturing_check_server


def main() -> int:
    if len(sys.argv) != 3 or sys.argv[1] not in ("genesys", "rfc7644"):
        print(__doc__, file=sys.stderr)
        return 2
    profile, url = sys.argv[1], sys.argv[2]
    try:
        scim2_cli.cli(args=["--url", url, "test"], standalone_mode=False)
    except SystemExit:
        pass
    if not _results:
        print("scim2-tester produced no result", file=sys.stderr)
        return 1
    failures, excluded, skipped = [], [], []
    for r in _results:
        if r.status == Status.SUCCESS:
            continue
        if r.status == Status.SKIPPED:
            skipped.append(r)
            continue
        reason = r.reason or ""
        why = next(
            (why for profiles, title, pattern, why in EXCLUSIONS
             if profile in profiles and title == r.title and re.search(pattern, reason, re.S)),
            None,
        )
        (excluded if why else failures).append((r, why))
    ok = sum(1 for r in _results if r.status == Status.SUCCESS)
    print()
    print(f"== scim2-tester ({profile}): {len(_results)} results, {ok} SUCCESS, {len(skipped)} SKIPPED, "
          f"{len(excluded)} excluded, {len(failures)} failed")
    for r in skipped:
        print(f"   skipped  {r.title}: {r.reason}")
    for r, why in excluded:
        print(f"   excluded {r.title}: {(r.reason or '').splitlines()[0] if r.reason else ''}  [{why}]")
    for r, _ in failures:
        print(f"   FAILED   {r.status.name} {r.title}: {r.reason}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
