#!/usr/bin/env python3
"""The console at /ui in a real browser: Debian's chromium, driven by playwright (PyPI) through
its own executable (playwright downloads no browser here).

Run by tests/api/console.rs against a rolesync it started (with the emulator) and a finished job
it submitted; usable by hand against any rolesync:

    python console_check.py --base http://127.0.0.1:8080 --key KEY --job JOB_ID \
        [--chromium /usr/bin/chromium]

Signs in through the form (a wrong key first), then checks that the jobs list, the job page and
the policy page render (the stylesheet applied, no script, no CSP violation, the hostile external
id shown as text) and that every figure they show is the one the API answers; downloads the CSV
of rejected rows through its link and compares it with the API's; signs out. Prints one line per
check and, at the end, "OK: all console checks passed"; exits 1 at the first failure.
"""

import argparse
import json
import sys
import urllib.request

from playwright.sync_api import sync_playwright

# Chromium, as root on a machine with no way out: no sandbox (root), nothing fetched in the
# background (its connections would be refused), a fresh profile every run (playwright's).
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


def api(base, key, path, accept="application/json"):
    req = urllib.request.Request(
        base + path, headers={"Authorization": f"Bearer {key}", "Accept": accept}
    )
    with urllib.request.urlopen(req, timeout=10) as resp:
        body = resp.read()
    return json.loads(body) if accept == "application/json" else body.decode("utf-8")


def at(value, path):
    for part in path.split("."):
        value = value[part]
    return value


def same(shown, expected):
    """A figure on the page against the API's value (numbers as numbers: 0 is 0.0)."""
    if expected is None:
        return shown == "—"
    if isinstance(expected, bool):
        return shown == str(expected).lower()
    if isinstance(expected, (int, float)):
        try:
            return float(shown) == float(expected)
        except ValueError:
            return False
    return shown == str(expected)


JOB_FIELDS = [
    "status",
    "counts.total",
    "counts.applied",
    "counts.unchanged",
    "counts.rejected",
    "counts.not_found",
    "counts.failed",
    "counts.cancelled",
    "counts.pending",
    "rows_per_sec",
]
JOB_PAGE_FIELDS = JOB_FIELDS + [
    "counts.planned",
    "scim.requests",
    "scim.retries",
    "scim.rate_limited",
    "users.total",
    "users.changed",
    "users.unchanged",
    "estimate.strategy",
    "estimate.reads",
    "estimate.lookups",
    "estimate.writes_max",
    "estimate.requests_per_minute",
    "paused_reason",
]


def run(args):
    base, key, job_id = args.base.rstrip("/"), args.key, args.job
    job = api(base, key, f"/v1/jobs/{job_id}")
    policy = api(base, key, "/v1/policy")
    items = api(base, key, f"/v1/jobs/{job_id}/items?outcome=rejected&limit=1000")["items"]
    csv_from_api = api(
        base, key, f"/v1/jobs/{job_id}/items?outcome=rejected", accept="text/csv"
    )
    check(job["counts"]["rejected"] > 0, "the job has rejected rows to show")

    with sync_playwright() as pw:
        browser = pw.chromium.launch(
            executable_path=args.chromium, headless=True, args=CHROMIUM_ARGS
        )
        context = browser.new_context(accept_downloads=True)
        context.set_default_timeout(TIMEOUT_MS)
        page = context.new_page()
        errors, dialogs = [], []
        # Errors in the console: a CSP violation ("Refused to ..."), a script error. (A status
        # >= 400 is logged there too: the wrong key's 401 is expected, and the favicon's 404;
        # a server error is caught below.)
        page.on(
            "console",
            lambda m: errors.append(m.text)
            if m.type == "error" and not m.text.startswith("Failed to load resource")
            else None,
        )
        page.on(
            "response",
            lambda r: errors.append(f"{r.status} {r.url}") if r.status >= 500 else None,
        )
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))

        # Not signed in: every page sends the browser to the form.
        page.goto(f"{base}/ui/jobs/{job_id}")
        check(page.url == f"{base}/ui/login", f"a page before sign-in leads to the form ({page.url})")
        page.fill("input[name=key]", "not-a-key")
        page.click("button[type=submit]")
        check(
            "That API key is not valid." in page.inner_text("main"),
            "a wrong key is refused with a message",
        )
        check(not context.cookies(), "a refused sign-in sets no cookie")

        page.fill("input[name=key]", key)
        page.click("button[type=submit]")
        page.wait_for_url(f"{base}/ui/jobs*")
        check(page.url.startswith(f"{base}/ui/jobs"), "the right key signs in (to the jobs)")
        cookies = [c for c in context.cookies() if c["name"] == "rolesync_console"]
        check(len(cookies) == 1, "the browser kept the sign-in cookie")
        c = cookies[0]
        check(
            c["httpOnly"] and c["secure"] and c["sameSite"] == "Strict" and c["path"] == "/ui",
            f"the cookie is HttpOnly, Secure, SameSite=Strict, Path=/ui ({c})",
        )
        check(page.evaluate("document.cookie") == "", "no script can read the cookie")
        background = page.evaluate(
            "getComputedStyle(document.querySelector('header')).backgroundColor"
        )
        check(background == "rgb(36, 54, 75)", f"the stylesheet applies under the CSP ({background})")

        # The jobs list: the job's row shows the API's figures.
        row = page.locator(f"tr[data-job='{job_id}']")
        check(row.count() == 1, "the job is listed")
        for f in JOB_FIELDS:
            shown = row.locator(f"[data-field='{f}']").inner_text().strip()
            check(same(shown, at(job, f)), f"list {f}: {shown} = {at(job, f)}")
        bar = row.locator("progress")
        done = job["counts"]["total"] - job["counts"]["pending"]
        check(
            float(bar.get_attribute("value")) == done
            and float(bar.get_attribute("max")) == max(job["counts"]["total"], 1),
            f"the progress bar is {done} of {job['counts']['total']}",
        )

        # The job page, through its link.
        row.locator(f"a[href='/ui/jobs/{job_id}']").click()
        page.wait_for_url(f"{base}/ui/jobs/{job_id}")
        for f in JOB_PAGE_FIELDS:
            shown = page.locator(f"[data-field='{f}']").inner_text().strip()
            check(same(shown, at(job, f)), f"job {f}: {shown} = {at(job, f)}")
        shown_rows = page.locator("#rejected tbody tr")
        check(shown_rows.count() == len(items), f"{len(items)} rejected rows shown")
        for i, item in enumerate(items):
            cells = shown_rows.nth(i).locator("td")
            check(
                cells.nth(0).inner_text() == str(item["line"])
                and cells.nth(1).inner_text() == item["external_id"]
                and cells.nth(4).inner_text() == item["reason"]["code"],
                f"rejected row {item['line']}: {item['external_id']!r} {item['reason']['code']}",
            )
        hostile = [i for i in items if "<script>" in i["external_id"]]
        check(len(hostile) == 1, "the batch carried a <script> external id")
        check(
            hostile[0]["external_id"] in page.inner_text("#rejected"),
            "the <script> external id is shown as text",
        )
        check(page.locator("script").count() == 0, "no script element on the page")

        # The CSV link downloads the API's CSV of the rejected rows.
        with page.expect_download() as download:
            page.click("#rejected-csv")
        path = download.value.path()
        with open(path, encoding="utf-8", newline="") as f:
            csv_from_console = f.read()
        check(csv_from_console == csv_from_api, "the CSV link gives the API's CSV of rejected rows")

        # The policy page.
        page.click("nav a[href='/ui/policy']")
        page.wait_for_url(f"{base}/ui/policy")
        shown = page.locator("[data-field='fingerprint']").inner_text()
        check(shown == policy["fingerprint"], "policy fingerprint")
        for name, table in (("tiers", "#tiers"), ("roles", "#roles"), ("sod", "#sod")):
            n = page.locator(f"{table} tbody tr").count()
            check(n == len(policy[name]), f"{len(policy[name])} {name} listed")
        for i, role in enumerate(policy["roles"]):
            cells = page.locator("#roles tbody tr").nth(i).locator("td")
            check(
                cells.nth(0).inner_text() == role["name"]
                and cells.nth(1).inner_text() == ", ".join(role["inherits"]),
                f"role {role['name']} inherits {role['inherits']}",
            )
        for i, rule in enumerate(policy["sod"]):
            cells = page.locator("#sod tbody tr").nth(i).locator("td")
            check(
                cells.nth(0).inner_text() == rule["name"]
                and cells.nth(1).inner_text() == " + ".join(rule["roles"]),
                f"SoD rule {rule['name']}",
            )

        # Sign out: the cookie is gone and the pages lead to the form again.
        page.click("form.signout button")
        page.wait_for_url(f"{base}/ui/login")
        check(
            not [c for c in context.cookies() if c["name"] == "rolesync_console"],
            "sign-out removes the cookie",
        )
        page.goto(f"{base}/ui/policy")
        check(page.url == f"{base}/ui/login", "after sign-out the pages lead to the form")

        check(not dialogs, f"no script ran (dialogs: {dialogs})")
        check(not errors, f"no error in the browser's console (CSP included): {errors}")
        browser.close()
    print("OK: all console checks passed")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--base", required=True)
    parser.add_argument("--key", required=True)
    parser.add_argument("--job", required=True)
    parser.add_argument("--chromium", default="chromium")
    args = parser.parse_args()
    if "/" not in args.chromium:
        import shutil

        args.chromium = shutil.which(args.chromium) or args.chromium
    try:
        run(args)
    except CheckFailed as e:
        print(f"FAILED: {e}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
