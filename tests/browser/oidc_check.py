#!/usr/bin/env python3
"""The console's sign-in through a real OpenID provider, in a real browser: Debian's chromium,
driven by playwright (PyPI) through its own executable.

Run by tests/api/console_oidc.rs against a rolesync whose console signs in with the test
provider (tests/oidc/provider.mjs, oidc-provider, on 127.0.0.1); usable by hand:

    python oidc_check.py --base http://127.0.0.1:8080 --job JOB_ID [--chromium /usr/bin/chromium]

For each person: opens /ui, follows "Sign in with your company account" to the provider's own
login page, signs in there, and is sent back to the console. `ops-reader` (group
rolesync-readers) sees the jobs list, a job page naming who submitted it, and the policy page,
with their name shown; then signs out (the provider's logout page too) and is asked to sign in
again. `ops-nobody` (no rolesync group) is refused with a 403 page and no session. Prints one
line per check and, at the end, "OK: all OpenID sign-in checks passed"; exits 1 at the first
failure.
"""

import argparse
import sys

from playwright.sync_api import sync_playwright

CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-quic",
    "--no-first-run",
]
TIMEOUT_MS = 20_000


class CheckFailed(Exception):
    pass


def check(ok, what):
    if not ok:
        raise CheckFailed(what)
    print(f"ok   {what}")


def sign_in_at_provider(page, base, login):
    page.goto(base + "/ui")
    check("/ui/login" in page.url, f"{login}: /ui asks to sign in")
    page.click("#oidc-sign-in")
    page.wait_for_selector("input[name=login]")
    check(not page.url.startswith(base), f"{login}: the provider's own login page ({page.url.split('?')[0]})")
    page.fill("input[name=login]", login)
    page.fill("input[name=password]", "any password")
    page.click("button[type=submit]")
    page.wait_for_url(lambda u: u.startswith(base), timeout=TIMEOUT_MS)


def run(args):
    base = args.base.rstrip("/")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=args.chromium, args=CHROMIUM_ARGS)
        try:
            context = browser.new_context()
            context.set_default_timeout(TIMEOUT_MS)
            page = context.new_page()

            sign_in_at_provider(page, base, "ops-reader")
            check("/ui/jobs" in page.url, "ops-reader: back on the jobs list")
            who = page.text_content("#signed-in-as") or ""
            check("Rex Reader" in who, f"ops-reader: named on the page ({who!r})")
            cookies = {c["name"]: c for c in context.cookies()}
            session = cookies.get("rolesync_session")
            check(session is not None, "a session cookie")
            check(session["httpOnly"] and session["secure"] and session["path"] == "/ui",
                  "the session cookie is HttpOnly, Secure, Path=/ui")
            check(session["sameSite"] == "Lax", "the session cookie is SameSite=Lax")
            check("rolesync_oidc" not in cookies, "the sign-in state cookie is gone")
            check(page.locator(f"tr[data-job='{args.job}']").count() == 1, "the job is listed")

            page.goto(f"{base}/ui/jobs/{args.job}")
            submitted = page.text_content("[data-field=submitted_by]") or ""
            check(submitted.startswith("api_key:"), f"the job page names its submitter ({submitted!r})")
            page.goto(f"{base}/ui/policy")
            check(page.locator("h1").text_content() == "Policy", "the policy page")

            page.click("form.signout button")
            # The provider's logout page asks; yes.
            page.wait_for_selector("button[name=logout]")
            check(not page.url.startswith(base), "sign-out goes on to the provider's logout")
            page.click("button[name=logout]")
            page.wait_for_url(lambda u: u.startswith(base), timeout=TIMEOUT_MS)
            check("/ui/login" in page.url, "back on the console's sign-in page")
            names = {c["name"] for c in context.cookies()}
            check("rolesync_session" not in names, "the session cookie is gone")
            page.goto(base + "/ui/jobs")
            check("/ui/login" in page.url, "the pages ask to sign in again")

            other = browser.new_context()
            other.set_default_timeout(TIMEOUT_MS)
            page = other.new_page()
            sign_in_at_provider(page, base, "ops-nobody")
            body = page.text_content("main") or ""
            check("jobs:read" in body, f"ops-nobody is refused: no group that may read jobs")
            names = {c["name"] for c in other.cookies()}
            check("rolesync_session" not in names, "ops-nobody has no session")
        finally:
            browser.close()
    print("OK: all OpenID sign-in checks passed")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--base", required=True)
    ap.add_argument("--job", required=True)
    ap.add_argument("--chromium", default="chromium")
    args = ap.parse_args()
    try:
        run(args)
    except CheckFailed as e:
        print(f"FAIL {e}")
        sys.exit(1)


if __name__ == "__main__":
    main()
