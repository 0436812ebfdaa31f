//! The emulator's parsers of client text, the SCIM filter and the PATCH body and path, fed
//! arbitrary and near-valid text: an answer (a value or an error), never a panic or a stack
//! overflow, and what they allocate stays within a small multiple of the input (the HTTP layer
//! bounds the input). Allocation is measured by a counting global allocator, per thread.

use proptest::prelude::*;

/// What a parse may allocate for `len` bytes of input: a small multiple (it keeps the input as
/// characters and builds a tree of it), plus a constant.
fn bound(len: usize) -> u64 {
    64 * len as u64 + (64 << 10)
}

fn filterish() -> impl Strategy<Value = String> {
    let token = prop_oneof![
        Just("(".to_owned()),
        Just(")".to_owned()),
        Just("[".to_owned()),
        Just("]".to_owned()),
        Just(" and ".to_owned()),
        Just(" or ".to_owned()),
        Just("not ".to_owned()),
        Just("userName".to_owned()),
        Just("externalId".to_owned()),
        Just("emails.value".to_owned()),
        Just(" eq ".to_owned()),
        Just(" co ".to_owned()),
        Just(" pr".to_owned()),
        Just("\"".to_owned()),
        Just("\\\"".to_owned()),
        Just("\"EMP-1\"".to_owned()),
        Just("true".to_owned()),
        Just("12".to_owned()),
        "\\PC{0,6}",
    ];
    proptest::collection::vec(token, 0..120).prop_map(|t| t.concat())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    #[test]
    fn filters_never_panic_and_allocate_in_proportion(text in prop_oneof![filterish(), "\\PC{0,300}"]) {
        let (_, peak) = alloc_meter::measure(|| crate::filter::parse(&text).is_ok());
        prop_assert!(peak < bound(text.len()), "{peak} for {} bytes", text.len());
    }

    #[test]
    fn patch_paths_never_panic_and_allocate_in_proportion(text in prop_oneof![filterish(), "\\PC{0,300}"]) {
        let (_, peak) = alloc_meter::measure(|| crate::patch::parse_path(&text).is_ok());
        prop_assert!(peak < bound(text.len()), "{peak} for {} bytes", text.len());
    }

    #[test]
    fn patch_bodies_never_panic(ops in proptest::collection::vec((
        prop_oneof![Just("add".to_owned()), Just("replace".to_owned()), Just("remove".to_owned()), Just("Add".to_owned()), "\\PC{0,8}"],
        prop_oneof![filterish(), Just("roles".to_owned()), Just("roles[value eq \"Agent\"]".to_owned())],
        any::<Option<bool>>(),
    ), 0..8)) {
        let body = serde_json::json!({
            "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
            "Operations": ops.iter().map(|(op, path, v)| serde_json::json!({
                "op": op, "path": path, "value": v.map(|b| if b { serde_json::json!([{"value": "Agent"}]) } else { serde_json::json!("x") }),
            })).collect::<Vec<_>>(),
        });
        let _ = crate::patch::parse_request(&body);
    }
}

/// Nesting that would overflow the stack of a naive recursive parser is refused early.
#[test]
fn deep_nesting_is_refused_not_a_stack_overflow() {
    for text in [
        "(".repeat(100_000),
        format!("{}userName pr{}", "(".repeat(5000), ")".repeat(5000)),
        format!("{}userName pr{}", "not (".repeat(5000), ")".repeat(5000)),
        format!("{}{}", "emails[".repeat(5000), "]".repeat(5000)),
        vec!["userName pr"; 10_000].join(" and "),
    ] {
        let (result, peak) = alloc_meter::measure(|| crate::filter::parse(&text).map(|_| ()));
        assert!(result.is_err(), "{}…", &text[..40]);
        assert!(peak < bound(text.len()));
        assert!(crate::patch::parse_path(&format!("roles[{text}]")).is_err());
    }
    let ok = format!("{}userName pr{}", "(".repeat(20), ")".repeat(20));
    assert!(crate::filter::parse(&ok).is_ok());
}
