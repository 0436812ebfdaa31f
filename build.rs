//! Build script: the git commit this build comes from, for `rolesync_build_info{git_sha}`.
//!
//! `ROLESYNC_GIT_SHA` in the build's environment wins (a container build, where `.git` is not
//! sent: `docker build --build-arg GIT_SHA=$(git rev-parse --short=12 HEAD)`); else
//! `git rev-parse`; else `unknown`. A build never fails for want of git.

use std::process::Command;

fn main() {
    println!("cargo:rerun-if-env-changed=ROLESYNC_GIT_SHA");
    let sha = std::env::var("ROLESYNC_GIT_SHA")
        .ok()
        .filter(|s| !s.trim().is_empty())
        .or_else(git_sha)
        .map(|s| sanitize(&s))
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "unknown".to_owned());
    println!("cargo:rustc-env=ROLESYNC_GIT_SHA={sha}");
    // Rebuild when HEAD moves (a commit, a checkout), wherever this work tree keeps it.
    for path in ["HEAD", "packed-refs"] {
        if let Some(p) = git(&["rev-parse", "--git-path", path]) {
            println!("cargo:rerun-if-changed={p}");
        }
    }
    if let Some(reference) = git(&["symbolic-ref", "-q", "HEAD"])
        && let Some(p) = git(&["rev-parse", "--git-path", &reference])
    {
        println!("cargo:rerun-if-changed={p}");
    }
}

fn git_sha() -> Option<String> {
    git(&["rev-parse", "--short=12", "HEAD"])
}

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok()?;
    if !out.status.success() {
        return None;
    }
    let s = String::from_utf8(out.stdout).ok()?.trim().to_owned();
    (!s.is_empty()).then_some(s)
}

/// A label value of hex digits and at most 40 characters, whatever the environment held.
fn sanitize(s: &str) -> String {
    s.trim()
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .take(40)
        .collect()
}
