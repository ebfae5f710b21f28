//! Mappings compiled from TOML and applied to records shaped as real
//! systems emit them.

use super::*;
use crate::config::Config;
use crate::engine::event::Ts;

const LIMITS: DecodeLimits = DecodeLimits {
    max_amount: 1e9,
    max_event_bytes: 65536,
};

fn mapping(toml: &str) -> Mapping {
    let config = Config::parse(toml).unwrap();
    compile(0, &config.inputs[0]).unwrap()
}

fn refusal(toml: &str) -> String {
    Config::parse(toml).unwrap_err().to_string()
}

fn event(m: &Mapping, json: &str) -> Event {
    match m.decode(None, Some(json.as_bytes()), LIMITS) {
        Ok(Mapped::Event(e)) => e,
        other => panic!("{json}: {other:?}"),
    }
}

fn reject(m: &Mapping, json: &str) -> RejectReason {
    m.decode(None, Some(json.as_bytes()), LIMITS).unwrap_err()
}

fn native(json: &str) -> Event {
    crate::engine::native::decode(json.as_bytes(), LIMITS).unwrap()
}

const ORDERS: &str = r#"
[[inputs]]
topic = "shop.orders"
event = "purchase"
unwrap = "debezium"
keyed_by_customer = false
when = { path = "/status", equals = "paid" }
[inputs.fields]
customer_id = "/customer_ref"
amount = { path = "/total_cents", scale = 0.01 }
currency = "/currency"
ts = { path = "/created_at", format = "epoch_us" }
event_id = "/id"
"#;

#[test]
fn debezium_orders_unwrap_filter_scale_and_coerce() {
    let m = mapping(ORDERS);
    let created = "2026-03-01T10:00:00Z";
    let us = Ts::parse_rfc3339(created).unwrap().0 * 1000;
    let row = |op: &str, status: &str| {
        format!(
            r#"{{"before":null,"after":{{"id":981,"customer_ref":4411,"total_cents":"123450","currency":"EUR","status":"{status}","created_at":{us}}},"op":"{op}","ts_ms":1}}"#
        )
    };
    let expected = native(&format!(
        r#"{{"type":"purchase","ts":"{created}","customer_id":"4411","amount":1234.5,"currency":"EUR","event_id":"981"}}"#
    ));
    assert_eq!(event(&m, &row("c", "paid")), expected);
    let enveloped = format!(
        r#"{{"schema":{{"type":"struct"}},"payload":{}}}"#,
        row("r", "paid")
    );
    assert_eq!(event(&m, &enveloped), expected, "a payload envelope");
    let skipped = |json: &str| m.decode(None, Some(json.as_bytes()), LIMITS).unwrap();
    assert_eq!(
        skipped(&row("u", "pending")),
        Mapped::Skipped(Skip::Filtered)
    );
    assert_eq!(skipped(&row("d", "paid")), Mapped::Skipped(Skip::Deleted));
    assert_eq!(
        skipped(r#"{"before":{"id":1},"after":null,"op":"d"}"#),
        Mapped::Skipped(Skip::Deleted)
    );
    assert_eq!(
        m.decode(None, None, LIMITS).unwrap(),
        Mapped::Skipped(Skip::Deleted),
        "a tombstone"
    );
}

const CRM: &str = r#"
[[inputs]]
topic = "crm.activities"
event = "call"
when = { path = "/kind", in = ["meeting", "call", "email"] }
[inputs.fields]
customer_id = "/account_id"
rep_id = "/owner_email"
channel = { path = "/kind", map = { meeting = "visit", call = "phone", email = "email" } }
ts = { path = "/occurred_at", format = "%Y-%m-%d %H:%M:%S", timezone = "Europe/Berlin" }
event_id = "/activity_id"
"#;

#[test]
fn crm_activities_map_channels_in_local_time() {
    let m = mapping(CRM);
    let got = event(
        &m,
        r#"{"activity_id":"a-1","account_id":"acme","owner_email":"kim@x.io","kind":"meeting","occurred_at":"2026-07-01 09:00:00"}"#,
    );
    assert_eq!(
        got,
        native(
            r#"{"type":"call","ts":"2026-07-01T07:00:00Z","customer_id":"acme","rep_id":"kim@x.io","channel":"visit","event_id":"a-1"}"#
        )
    );
    assert_eq!(
        m.decode(None, Some(br#"{"kind":"note"}"#), LIMITS).unwrap(),
        Mapped::Skipped(Skip::Filtered)
    );
}

const HELPDESK: &str = r#"
[[inputs]]
topic = "helpdesk.tickets"
event = "ticket"
[inputs.fields]
customer_id = "/ticket/requester/account"
ticket_id = "/ticket/id"
status = { path = "/ticket/status", map = { new = "opened", open = "opened", solved = "resolved" } }
kind = { path = "/ticket/tags", contains = "complaint", then = "complaint" }
ts = "/updated_at"
"#;

#[test]
fn helpdesk_tickets_from_nested_fields_and_tags() {
    let m = mapping(HELPDESK);
    let record = |tags: &str, status: &str| {
        format!(
            r#"{{"ticket":{{"id":77,"status":"{status}","tags":{tags},"requester":{{"account":"acme"}}}},"updated_at":"2026-03-01T10:00:00+01:00"}}"#
        )
    };
    let expected = |complaint: bool, status: &str| {
        let kind = if complaint {
            r#","kind":"complaint""#
        } else {
            ""
        };
        native(&format!(
            r#"{{"type":"ticket","ts":"2026-03-01T09:00:00Z","customer_id":"acme","ticket_id":"77","status":"{status}"{kind}}}"#
        ))
    };
    assert_eq!(
        event(&m, &record(r#"["vip","complaint"]"#, "new")),
        expected(true, "opened")
    );
    assert_eq!(
        event(&m, &record(r#"["vip"]"#, "solved")),
        expected(false, "resolved")
    );
    assert_eq!(event(&m, &record("[]", "open")), expected(false, "opened"));
    let r = reject(&m, &record("[]", "pending"));
    assert_eq!(r.code(), "unmapped_value");
    let text = r.to_string();
    assert!(
        text.starts_with("/ticket/status: \"pending\" is not in the field's map"),
        "{text}"
    );
    assert!(
        text.contains("new, open, solved") && text.contains("inputs[0] (helpdesk.tickets)"),
        "{text}"
    );
}

const HR: &str = r#"
[[inputs]]
topic = "hr.employees"
event = "rep"
roster = true
when = { path = "/event", equals = "termination" }
[inputs.fields]
rep_id = "/employee_email"
status = { value = "departed" }
ts = { path = "/effective_date", format = "date" }
"#;

#[test]
fn hr_terminations_become_departures_at_midnight() {
    let m = mapping(HR);
    assert!(m.roster);
    let got = event(
        &m,
        r#"{"event":"termination","employee_email":"kim@x.io","effective_date":"2026-03-31"}"#,
    );
    assert_eq!(
        got,
        native(
            r#"{"type":"rep","ts":"2026-03-31T00:00:00Z","rep_id":"kim@x.io","status":"departed"}"#
        )
    );
}

#[test]
fn errors_name_the_pointer_and_the_problem() {
    let m = mapping(ORDERS);
    let paid = |fields: &str| format!(r#"{{"after":{{"status":"paid",{fields}}},"op":"c"}}"#);
    let r = reject(&m, &paid(r#""total_cents":1,"created_at":1"#));
    assert_eq!(r.code(), "missing_field");
    assert!(
        r.to_string().starts_with("/customer_ref: missing field"),
        "{r}"
    );
    let r = reject(
        &m,
        &paid(r#""customer_ref":"c","total_cents":1,"created_at":"abc""#),
    );
    assert_eq!(r.code(), "bad_timestamp");
    assert!(
        r.to_string()
            .starts_with("/created_at: the string \"abc\" is not epoch_us"),
        "{r}"
    );
    // epoch_us past 9999-12-31: no event time, refused rather than kept
    // clamped (a customer record holds times up to 48 bits).
    let r = reject(
        &m,
        &paid(r#""customer_ref":"c","total_cents":1,"created_at":253402300800000000"#),
    );
    assert_eq!(r.code(), "bad_timestamp");
    let r = reject(
        &m,
        &paid(r#""customer_ref":"c","total_cents":"ten","created_at":1"#),
    );
    assert_eq!(r.code(), "wrong_type");
    assert!(
        r.to_string()
            .contains("expected a number, got the string \"ten\""),
        "{r}"
    );
    let r = reject(
        &m,
        &paid(r#""customer_ref":{"x":1},"total_cents":1,"created_at":1"#),
    );
    assert!(
        r.to_string().contains("expected a string, got an object"),
        "{r}"
    );
    let r = reject(
        &m,
        &paid(r#""customer_ref":"c","total_cents":1,"created_at":1,"currency":"euro""#),
    );
    assert_eq!(r.code(), "unknown_currency");
    assert!(r.to_string().starts_with("/currency: "), "{r}");
    assert_eq!(reject(&m, "{not json").code(), "invalid_json");
}

#[test]
fn defaults_constants_and_a_mapped_event_type() {
    let m = mapping(
        r#"
[[inputs]]
topic = "activity"
event = { path = "/what", map = { order = "purchase", visit = "call" } }
[inputs.fields]
customer_id = "/who"
amount = { path = "/sum", default = 0 }
rep_id = { path = "/rep", default = "unassigned" }
channel = { path = "/how", map = { f2f = "visit" }, default = "phone" }
ts = { path = "/at", format = "epoch_ms" }
"#,
    );
    let order = event(&m, r#"{"what":"order","who":"c","at":0}"#);
    assert_eq!(
        order,
        native(r#"{"type":"purchase","ts":"1970-01-01T00:00:00Z","customer_id":"c","amount":0}"#)
    );
    let call = event(&m, r#"{"what":"visit","who":"c","at":0,"how":"zoom"}"#);
    assert_eq!(
        call,
        native(
            r#"{"type":"call","ts":"1970-01-01T00:00:00Z","customer_id":"c","rep_id":"unassigned","channel":"phone"}"#
        )
    );
    assert_eq!(
        reject(&m, r#"{"what":"note","who":"c","at":0}"#).code(),
        "unmapped_value"
    );
}

#[test]
fn a_key_that_is_not_the_customer_is_refused_on_a_customer_keyed_topic() {
    let m = mapping(HELPDESK);
    let json = br#"{"ticket":{"id":1,"status":"new","requester":{"account":"acme"}},"updated_at":"2026-03-01T10:00:00Z"}"#;
    assert!(m.decode(Some(b"acme"), Some(json), LIMITS).is_ok());
    let r = m.decode(Some(b"ticket-1"), Some(json), LIMITS).unwrap_err();
    assert_eq!(r.code(), "wrong_key");
    assert!(r.to_string().contains("keyed_by_customer = false"), "{r}");
    let orders = mapping(ORDERS);
    assert!(!orders.keyed_by_customer);
}

#[test]
fn mappings_that_cannot_work_are_refused_naming_the_key() {
    let with = |event: &str, fields: &str| {
        refusal(&format!(
            "[[inputs]]\ntopic = \"t\"\nevent = {event}\n[inputs.fields]\n{fields}\n"
        ))
    };
    let base = "customer_id = \"/c\"\namount = \"/a\"\nts = \"/t\"\n";
    let cases = [
        (
            with("\"refund\"", base),
            "inputs[0].event",
            "unknown event `refund`",
        ),
        (
            with("\"purchase\"", &format!("{base}colour = \"/x\"")),
            "inputs[0].fields.colour",
            "unknown field",
        ),
        (
            with("\"purchase\"", &format!("{base}rep_id = \"/r\"")),
            "inputs[0].fields.rep_id",
            "a purchase event has no field",
        ),
        (
            with("\"purchase\"", "customer_id = \"/c\"\nts = \"/t\""),
            "inputs[0].fields.amount",
            "needs `amount`",
        ),
        (
            with(
                "\"purchase\"",
                "customer_id = \"c\"\namount = \"/a\"\nts = \"/t\"",
            ),
            "inputs[0].fields.customer_id",
            "not a JSON Pointer",
        ),
        (
            with(
                "\"purchase\"",
                "customer_id = \"/c\"\namount = \"/a\"\nts = { path = \"/t\", format = \"%Q\" }",
            ),
            "inputs[0].fields.ts",
            "not a valid strftime",
        ),
        (
            with(
                "\"purchase\"",
                "customer_id = \"/c\"\namount = \"/a\"\nts = { path = \"/t\", format = \"%H\", timezone = \"Mars/Olympus\" }",
            ),
            "inputs[0].fields.ts",
            "unknown time zone",
        ),
        (
            with(
                "\"call\"",
                "customer_id = \"/c\"\nrep_id = \"/r\"\nts = \"/t\"\nchannel = { path = \"/k\", map = { meeting = \"fax\" } }",
            ),
            "inputs[0].fields.channel",
            "expected one of visit, phone, email, chat",
        ),
        (
            with(
                "\"purchase\"",
                "customer_id = \"/c\"\namount = { path = \"/a\", format = \"date\" }\nts = \"/t\"",
            ),
            "inputs[0].fields.amount",
            "apply to `ts` only",
        ),
        (
            with("\"rep\"", "rep_id = \"/r\"\nstatus = \"/s\"\nts = \"/t\""),
            "inputs[0].roster",
            "roster",
        ),
        (
            with("{ path = \"/k\", map = { x = \"sale\" } }", base),
            "inputs[0].event",
            "expected one of purchase, call, ticket, rep",
        ),
    ];
    for (got, key, why) in cases {
        assert!(
            got.contains(key) && got.contains(why),
            "wanted {key}: {why}, got {got}"
        );
    }
    let twice = refusal(&format!("{ORDERS}{ORDERS}"));
    assert!(twice.contains("inputs[1].topic"), "{twice}");
}

#[test]
fn segment_and_key_account_are_mapped_from_paths() {
    let m = mapping(
        r#"
[[inputs]]
topic = "crm.accounts_activity"
event = "call"
[inputs.fields]
customer_id = "/account/id"
rep_id = "/owner"
ts = "/at"
segment = "/account/channel"
key_account = "/account/strategic"
"#,
    );
    let e = event(
        &m,
        r#"{"account":{"id":"A1","channel":"wholesale","strategic":true},"owner":"r1","at":"2026-03-01T10:00:00Z"}"#,
    );
    assert_eq!(e.segment.as_deref(), Some("wholesale"));
    assert_eq!(e.key_account, Some(true));
    let e = event(
        &m,
        r#"{"account":{"id":"A1","strategic":"false"},"owner":"r1","at":"2026-03-01T10:00:00Z"}"#,
    );
    assert_eq!((e.segment, e.key_account), (None, Some(false)));
    let bad = reject(
        &m,
        r#"{"account":{"id":"A1","strategic":"maybe"},"owner":"r1","at":"2026-03-01T10:00:00Z"}"#,
    );
    assert!(bad.to_string().contains("/account/strategic"), "{bad}");
    let native = native(
        r#"{"type":"purchase","ts":"2026-03-01T10:00:00Z","customer_id":"A1","amount":5,"segment":"retail","key_account":false}"#,
    );
    assert_eq!(
        (native.segment.as_deref(), native.key_account),
        (Some("retail"), Some(false))
    );
}
