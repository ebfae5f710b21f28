use super::*;

const T: i64 = 1_767_225_600_000;

fn alert(id: &str, customer: &str, status: &str, tier: &str, at: i64, risk: u64) -> Published {
    Published {
        alert_id: id.into(),
        status: status.into(),
        rule: "purchase_recency".into(),
        cause: None,
        customer_id: customer.into(),
        tier: tier.into(),
        segment: "retail".into(),
        at: Ts(at),
        reason: "no purchase".into(),
        signals: serde_json::json!({"risk": risk, "account_rep": "r1"}),
    }
}

#[test]
fn firing_alerts_are_listed_until_they_resolve_sorted_and_paged() {
    let inbox = Inbox::default();
    let mut live = inbox.subscribe();
    inbox.alert(alert("a", "c1", "firing", "B", T, 40));
    inbox.alert(alert("b", "c2", "firing", "A", T + 1, 90));
    inbox.alert(alert("c", "c3", "firing", "A", T + 2, 60));
    assert_eq!(live.try_recv().unwrap().kind, "firing");
    let ids = |p: &Page| {
        p.alerts
            .iter()
            .map(|i| i.episode.alert.alert_id.clone())
            .collect::<Vec<_>>()
    };
    let now = Ts(T + 10);
    assert_eq!(
        ids(&inbox.list(&Filter::default(), now).unwrap()),
        ["b", "c", "a"]
    );
    let by_age = Filter {
        sort: Some(Sort::Age),
        ..Filter::default()
    };
    assert_eq!(ids(&inbox.list(&by_age, now).unwrap()), ["a", "b", "c"]);
    let first = inbox
        .list(
            &Filter {
                limit: Some(2),
                ..Filter::default()
            },
            now,
        )
        .unwrap();
    assert_eq!(ids(&first), ["b", "c"]);
    assert_eq!(first.counts.tier.get("A"), Some(&2));
    let second = inbox
        .list(
            &Filter {
                limit: Some(2),
                cursor: first.next.clone(),
                ..Filter::default()
            },
            now,
        )
        .unwrap();
    assert_eq!((ids(&second), second.next), (vec!["a".to_string()], None));
    inbox.alert(alert("b", "c2", "resolved", "A", T + 5, 10));
    inbox.alert(alert("b", "c2", "firing", "A", T + 1, 90));
    assert_eq!(
        ids(&inbox.list(&Filter::default(), now).unwrap()),
        ["c", "a"],
        "a replayed firing stays resolved"
    );
    assert_eq!(inbox.customer("c2", now).len(), 1);
}

#[test]
fn lifecycles_filter_the_listing_and_snoozes_wake() {
    let inbox = Inbox::default();
    inbox.alert(alert("a", "c1", "firing", "A", T, 40));
    inbox.alert(alert("b", "c2", "firing", "A", T, 50));
    let mut l = inbox.lifecycle_of("a");
    l.apply(
        Action::Snooze {
            until: Ts(T + 100),
            reason: None,
        },
        "anna",
        Ts(T + 1),
    )
    .unwrap();
    assert!(inbox.lifecycle(l.clone(), 5));
    let mut older = Lifecycle::new("a");
    older
        .apply(Action::Ack { note: None }, "ben", Ts(T + 50))
        .unwrap();
    assert!(
        !inbox.lifecycle(older, 4),
        "a record at an earlier offset is ignored, whatever its times"
    );
    let open = Filter {
        state: Some(State::Open),
        ..Filter::default()
    };
    let listed = |now| inbox.list(&open, Ts(now)).unwrap().alerts.len();
    assert_eq!(listed(T + 50), 1, "snoozed is not open");
    assert_eq!(inbox.wake(Ts(T + 99)), []);
    assert_eq!(
        inbox.wake(Ts(T + 100)),
        [("a".to_string(), "c1".to_string())]
    );
    assert_eq!(listed(T + 100), 2, "open again once the snooze ran out");
    assert!(inbox.wake(Ts(T + 200)).is_empty(), "each snooze wakes once");
}

#[test]
fn records_that_keep_the_episode_rebuild_it_without_the_alert_topic() {
    let holder = Inbox::default();
    holder.alert(alert("a", "c1", "firing", "A", T, 70));
    assert_eq!(
        holder.unkept(10, |_| true),
        ["a"],
        "the record must keep it"
    );
    assert!(
        holder.unkept(10, |c| c != "c1").is_empty(),
        "only its holder writes it"
    );
    let kept = holder.lifecycle_of("a").keeping();
    let json = serde_json::to_vec(&kept).unwrap();
    let kept: Lifecycle = serde_json::from_slice(&json).expect("the record reads back");
    assert!(holder.lifecycle(kept.clone(), 0));
    assert!(holder.unkept(10, |_| true).is_empty());

    let fresh = Inbox::default();
    assert!(fresh.lifecycle(kept, 0));
    let now = Ts(T + 10);
    let item = fresh.get("a", now).expect("rebuilt from the record alone");
    assert_eq!((item.state, item.episode.fired_at), (State::Open, Ts(T)));
    assert_eq!(fresh.customer("c1", now).len(), 1);
    assert_eq!(fresh.list(&Filter::default(), now).unwrap().alerts.len(), 1);

    holder.alert(alert("a", "c1", "resolved", "A", T + 5, 10));
    assert_eq!(holder.unkept(10, |_| true), ["a"], "the resolution too");
}

#[test]
fn episodes_resolved_beyond_keep_are_dropped_firing_ones_stay() {
    let day = 86_400_000;
    let keep = std::time::Duration::from_secs(30 * 86_400);
    let inbox = Inbox::default();
    inbox.alert(alert("old", "c1", "firing", "A", T, 70));
    inbox.alert(alert("old", "c1", "resolved", "A", T + day, 10));
    assert!(inbox.lifecycle(inbox.lifecycle_of("old"), 3));
    inbox.alert(alert("recent", "c2", "firing", "A", T, 70));
    inbox.alert(alert("recent", "c2", "resolved", "A", T + 20 * day, 10));
    inbox.alert(alert("firing", "c3", "firing", "A", T, 70));
    assert!(
        inbox.sweep(keep).is_empty(),
        "nothing is older than keep yet"
    );
    inbox.alert(alert("new", "c4", "firing", "A", T + 32 * day, 70));
    assert_eq!(
        inbox.sweep(keep),
        [("old".to_string(), "c1".to_string())],
        "dropped, and its record is to be tombstoned"
    );
    let now = Ts(T + 32 * day);
    assert!(inbox.get("old", now).is_none());
    assert!(inbox.customer("c1", now).is_empty());
    assert!(inbox.get("recent", now).is_some());
    assert!(
        inbox.get("firing", now).is_some(),
        "a firing episode is kept however old"
    );
    assert_eq!(inbox.len(), 3);
    inbox.tombstone("recent", 9);
    assert!(inbox.get("recent", now).is_none(), "a tombstone forgets it");
}
