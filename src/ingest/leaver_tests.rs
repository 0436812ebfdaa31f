//! `action` and `roster` in every format (`ingest::parse`).

use super::*;

fn parse_ok(format: Format, body: &str, query: &BatchQuery) -> Batch {
    parse(format, body.as_bytes(), query, &Limits::with_max_rows(100))
        .unwrap_or_else(|e| panic!("{e}"))
}

fn actions(b: &Batch) -> Vec<(Action, Option<&str>)> {
    b.rows
        .iter()
        .map(|r| (r.action, r.defect.as_deref()))
        .collect()
}

#[test]
fn csv_action_column_is_optional_and_a_revoke_row_needs_no_role() {
    let b = parse_ok(
        Format::Csv,
        "external_id,role_template,license_tier,action\nA,,,revoke\nB,Agent,Standard Agent,\nC,Agent,Standard Agent,assign\nD,Agent,Standard Agent,fire\n",
        &BatchQuery::default(),
    );
    let got = actions(&b);
    assert_eq!(got[0], (Action::Revoke, None));
    assert_eq!(got[1], (Action::Assign, None));
    assert_eq!(got[2], (Action::Assign, None));
    assert_eq!(got[3].0, Action::Assign);
    assert!(
        got[3].1.unwrap_or("").contains("action \"fire\""),
        "{got:?}"
    );
    // Without the column every row assigns.
    let b = parse_ok(
        Format::Csv,
        "external_id,role_template,license_tier\nA,Agent,Standard Agent\n",
        &BatchQuery::default(),
    );
    assert_eq!(actions(&b), vec![(Action::Assign, None)]);
}

#[test]
fn json_and_ndjson_revoke_rows_need_only_external_id() {
    let b = parse_ok(
        Format::Ndjson,
        "{\"external_id\":\"A\",\"action\":\"revoke\"}\n{\"external_id\":\"B\",\"action\":7,\"role_template\":\"Agent\",\"license_tier\":\"X\"}\n",
        &BatchQuery::default(),
    );
    assert_eq!(b.rows[0].action, Action::Revoke);
    assert_eq!(b.rows[0].role_template, "");
    assert!(b.rows[1].defect.as_deref().unwrap_or("").contains("action"));
    let b = parse_ok(
        Format::Json,
        r#"{"roster":"full","assignments":[{"external_id":"A","action":"revoke","role_template":"Agent"}]}"#,
        &BatchQuery::default(),
    );
    assert_eq!(b.roster, Roster::Full);
    assert_eq!(actions(&b), vec![(Action::Revoke, None)]);
    // An assign row still needs its role and tier: the body is refused, naming them.
    let e = parse(
        Format::Json,
        br#"[{"external_id":"A","action":"assign"}]"#,
        &BatchQuery::default(),
        &Limits::with_max_rows(10),
    )
    .err()
    .map(|e| e.to_string())
    .unwrap_or_default();
    assert!(e.contains("role_template"), "{e}");
}

#[test]
fn roster_from_the_query_or_the_envelope_must_agree() {
    let query = BatchQuery {
        roster: Some("full".into()),
        ..BatchQuery::default()
    };
    let b = parse_ok(
        Format::Csv,
        "external_id,role_template,license_tier\nA,Agent,X\n",
        &query,
    );
    assert_eq!(b.roster, Roster::Full);
    let b = parse_ok(
        Format::Csv,
        "external_id,role_template,license_tier\nA,Agent,X\n",
        &BatchQuery::default(),
    );
    assert_eq!(b.roster, Roster::Partial);
    let partial = BatchQuery {
        roster: Some("partial".into()),
        ..BatchQuery::default()
    };
    let e = parse(
        Format::Json,
        br#"{"roster":"full","assignments":[{"external_id":"A","action":"revoke"}]}"#,
        &partial,
        &Limits::with_max_rows(10),
    );
    let Err(ApiError::BadRequest { errors, .. }) = e else {
        panic!("{e:?}")
    };
    let fields: Vec<&str> = errors.iter().map(|e| e.field.as_str()).collect();
    assert_eq!(fields, ["query.roster", "body.roster"]);
    let bad = BatchQuery {
        roster: Some("everyone".into()),
        ..BatchQuery::default()
    };
    assert!(matches!(
        parse(
            Format::Csv,
            b"external_id,role_template,license_tier\n",
            &bad,
            &Limits::with_max_rows(10)
        ),
        Err(ApiError::BadRequest { .. })
    ));
}

#[test]
fn effective_at_is_an_optional_rfc3339_column_or_field_and_a_typo_is_the_rows_rejection() {
    let b = parse_ok(
        Format::Csv,
        "external_id,role_template,license_tier,effective_at\nA,Agent,Standard Agent,2026-04-01T08:00:00Z\nB,Agent,Standard Agent,\nC,Agent,Standard Agent,2026-04-31\n",
        &BatchQuery::default(),
    );
    assert_eq!(b.rows[0].effective_at_ms, Some(1_775_030_400_000));
    assert_eq!(b.rows[0].defect, None);
    assert_eq!(b.rows[1].effective_at_ms, None);
    assert_eq!(b.rows[1].defect, None);
    assert!(
        b.rows[2]
            .defect
            .as_deref()
            .unwrap_or("")
            .contains("effective_at \"2026-04-31\""),
        "{:?}",
        b.rows[2].defect
    );
    let b = parse_ok(
        Format::Ndjson,
        "{\"external_id\":\"A\",\"action\":\"revoke\",\"effective_at\":\"2026-03-31T23:59:59+01:00\"}\n{\"external_id\":\"B\",\"role_template\":\"Agent\",\"license_tier\":\"X\",\"effective_at\":7}\n",
        &BatchQuery::default(),
    );
    assert_eq!(b.rows[0].effective_at_ms, Some(1_774_997_999_000));
    assert!(
        b.rows[1]
            .defect
            .as_deref()
            .unwrap_or("")
            .contains("effective_at")
    );
}
