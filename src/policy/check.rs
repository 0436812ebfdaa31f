//! `rolesync policy check` (stub; replaced by the full report).

pub fn check_report(path: &std::path::Path) -> (String, bool) {
    match super::Policy::load(path) {
        Ok(_) => ("policy ok".into(), true),
        Err(e) => (e.to_string(), false),
    }
}
