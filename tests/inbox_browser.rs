//! The retention inbox in a real browser (Debian's chromium, driven over
//! WebDriver by fantoccini through chromedriver), against the whole service
//! on rdkafka's mock cluster: sign in; an alert arrives without a reload;
//! acknowledge it; it stays acknowledged across a reload and a restart;
//! what is typed into a row survives live updates; snooze one, see it
//! leave the default view and come back when the snooze runs out; a viewer sees no
//! action controls and a forged post is refused. Screenshots land in
//! `target/tmp/inbox-screens/` (`inbox-live.png` is the README's).

mod common;

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use fantoccini::{Client, ClientBuilder, Locator};
use sha2::Digest;
use tokio_util::sync::CancellationToken;

use churnwatch::config::{Role, TokenConfig};
use churnwatch::engine::store::Store;
use common::*;

const OPERATOR: &str = "operator-token-7f3a";
const VIEWER: &str = "viewer-token-c41d";

/// chromedriver on a free port, killed when dropped.
struct Driver(Child, String);

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn driver() -> Driver {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let child = Command::new("chromedriver")
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("chromedriver is installed (tests/run.sh installs chromium-driver)");
    let url = format!("http://127.0.0.1:{port}");
    let up = until(Duration::from_secs(20), || async {
        tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
    })
    .await;
    assert!(up, "chromedriver listens on {url}");
    Driver(child, url)
}

async fn browser(driver: &Driver) -> Client {
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        serde_json::json!({
            "binary": "/usr/bin/chromium",
            "args": ["--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1400,900"],
        }),
    );
    ClientBuilder::native()
        .capabilities(caps)
        .connect(&driver.1)
        .await
        .expect("a browser session")
}

/// Polls `probe` every 100 ms until true, for at most `limit`.
async fn until<F: std::future::Future<Output = bool>>(
    limit: Duration,
    mut probe: impl FnMut() -> F,
) -> bool {
    let deadline = tokio::time::Instant::now() + limit;
    while tokio::time::Instant::now() < deadline {
        if probe().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

async fn text_of(c: &Client, css: &str) -> Option<String> {
    c.find(Locator::Css(css)).await.ok()?.text().await.ok()
}

async fn screenshot(c: &Client, name: &str) {
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("inbox-screens");
    std::fs::create_dir_all(&dir).expect("screens dir");
    let png = c.screenshot().await.expect("screenshot");
    std::fs::write(dir.join(name), png).expect("write screenshot");
}

async fn sign_in(c: &Client, base: &str, token: &str) {
    c.goto(&format!("{base}/")).await.unwrap();
    assert!(
        c.current_url().await.unwrap().path().ends_with("/signin"),
        "the inbox asks to sign in"
    );
    c.find(Locator::Css("input[name=token]"))
        .await
        .unwrap()
        .send_keys(token)
        .await
        .unwrap();
    c.find(Locator::Css("form[action='/signin'] button"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let signed = until(Duration::from_secs(10), || async {
        c.current_url().await.is_ok_and(|u| u.path() == "/")
    })
    .await;
    assert!(signed, "signed in");
}

fn row(id: &str) -> String {
    format!("tr[id='alert-{id}']")
}

/// Clicks the action button `action` of the alert's row. The live refresh
/// may replace the row between finding and clicking it (a stale element):
/// then it is found again.
async fn click(c: &Client, id: &str, action: &str) {
    let css = format!("{} button[data-action={action}]", row(id));
    let clicked = until(Duration::from_secs(10), || async {
        match c.find(Locator::Css(&css)).await {
            Ok(button) => button.click().await.is_ok(),
            Err(_) => false,
        }
    })
    .await;
    assert!(clicked, "clicked {action} on {id}");
}

/// The ids of the listed alerts, read in one step (rows may be replaced
/// by the live refresh at any time).
async fn listed_ids(c: &Client) -> Vec<String> {
    let ids = c
        .execute(
            "return Array.from(document.querySelectorAll(\"tr[id^='alert-']\")).map(r => r.id.slice(6));",
            vec![],
        )
        .await
        .unwrap_or_default();
    serde_json::from_value(ids).unwrap_or_default()
}

/// The alert's state cell, as shown.
async fn state_of(c: &Client, id: &str) -> String {
    text_of(c, &format!("{} td.state", row(id)))
        .await
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_inbox_in_a_browser() {
    let (_cluster, brokers) = cluster_with_topics(3);
    let mut config = mock_config(&brokers);
    let token = |name: &str, role, secret: &str| TokenConfig {
        name: name.into(),
        role,
        token_file: None,
        token_sha256: Some(hex::encode(sha2::Sha256::digest(secret.as_bytes()))),
    };
    config.http.tokens = vec![
        token("retention-lead", Role::Operator, OPERATOR),
        token("dashboard", Role::Viewer, VIEWER),
    ];
    // One session key for both runs: the sign-in survives the restart.
    let key = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(key.path(), [7u8; 48]).unwrap();
    config.http.session_key_file = Some(key.path().to_path_buf());

    let driver = driver().await;
    let c = browser(&driver).await;
    let stop = CancellationToken::new();
    let first = spawn_run(&config, Store::default(), &stop).await;
    sign_in(&c, &first.api, OPERATOR).await;
    assert!(
        c.find(Locator::Css("tr[id^='alert-']")).await.is_err(),
        "nothing has fired yet"
    );

    // Alerts arrive while the page is open: no reload. (A small generated
    // population: many customers still slipping at its end.)
    produce_lines(&config, &common::broker::population_lines(300, 4, 90)).await;
    let arrived = until(Duration::from_secs(60), || async {
        c.find(Locator::Css("tr[id^='alert-']")).await.is_ok()
    })
    .await;
    assert!(arrived, "an alert appeared without a reload");
    let two = until(Duration::from_secs(30), || async {
        c.find_all(Locator::Css("tr[id^='alert-']"))
            .await
            .is_ok_and(|r| r.len() >= 2)
    })
    .await;
    assert!(two, "two alerts to work with");
    let live = text_of(&c, "#live").await.unwrap_or_default();
    assert!(live.starts_with("Live"), "the page says it is live: {live}");
    screenshot(&c, "inbox-live.png").await;
    let ids = listed_ids(&c).await;
    assert!(ids.len() >= 2, "two alerts listed: {ids:?}");
    let (first_id, second_id) = (ids[0].clone(), ids[1].clone());

    // Acknowledge; the page shows who.
    click(&c, &first_id, "ack").await;
    let acked = |c: &Client| {
        let (c, id) = (c.clone(), first_id.clone());
        async move { state_of(&c, &id).await == "acknowledged by retention-lead" }
    };
    assert!(
        until(Duration::from_secs(10), || acked(&c)).await,
        "acknowledged"
    );
    c.refresh().await.unwrap();
    assert!(
        until(Duration::from_secs(10), || acked(&c)).await,
        "still acknowledged after a reload"
    );

    // Restart the service: the lifecycle comes back from the actions topic.
    stop.cancel();
    first.handle.await.expect("join").expect("service");
    let stop = CancellationToken::new();
    let second = spawn_run(&config, Store::default(), &stop).await;
    c.goto(&format!("{}/", second.api)).await.unwrap();
    assert!(
        until(Duration::from_secs(60), || acked(&c)).await,
        "still acknowledged after a restart"
    );

    // Typing into a row while the list updates live: the text survives.
    // The update is another alert assigned through the API meanwhile,
    // which the page shows without a reload.
    let field = format!("{} input[name=to]", row(&first_id));
    let typed = until(Duration::from_secs(10), || async {
        match c.find(Locator::Css(&field)).await {
            Ok(input) => input.send_keys("Anna Retention").await.is_ok(),
            Err(_) => false,
        }
    })
    .await;
    assert!(typed, "typed into the assign field");
    let assigned = reqwest::Client::new()
        .post(format!("{}/api/v1/alerts/{second_id}/assign", second.api))
        .bearer_auth(OPERATOR)
        .json(&serde_json::json!({"to": "ben"}))
        .send()
        .await
        .unwrap();
    assert_eq!(assigned.status().as_u16(), 200, "assigned through the API");
    let owner = format!("{} td.owner", row(&second_id));
    assert!(
        until(Duration::from_secs(10), || async {
            text_of(&c, &owner).await.as_deref() == Some("ben")
        })
        .await,
        "the live update arrived"
    );
    let value = c
        .execute(
            "return document.querySelector(arguments[0]).value;",
            vec![serde_json::json!(field)],
        )
        .await
        .unwrap();
    assert_eq!(
        value, "Anna Retention",
        "what was typed survived the update"
    );
    click(&c, &first_id, "assign").await;
    let first_owner = format!("{} td.owner", row(&first_id));
    assert!(
        until(Duration::from_secs(10), || async {
            text_of(&c, &first_owner).await.as_deref() == Some("Anna Retention")
        })
        .await,
        "assigned as typed"
    );

    // Snooze the other for three seconds: it leaves the default view (what
    // needs work), then comes back open. Typed and submitted in one script
    // step.
    c.execute(
        "const r = document.getElementById('alert-' + arguments[0]); \
         r.querySelector('input[name=for]').value = '3s'; \
         r.querySelector('button[data-action=snooze]').click();",
        vec![serde_json::json!(second_id)],
    )
    .await
    .unwrap();
    let state = |c: &Client| {
        let (c, id) = (c.clone(), second_id.clone());
        async move { state_of(&c, &id).await }
    };
    assert!(
        until(Duration::from_secs(5), || async {
            !listed_ids(&c).await.contains(&second_id)
        })
        .await,
        "snoozed: not in the default view"
    );
    screenshot(&c, "inbox-snoozed.png").await;
    assert!(
        until(Duration::from_secs(15), || async {
            state(&c).await == "open"
        })
        .await,
        "open again when the snooze ran out, without a reload: {}",
        state(&c).await
    );

    // A viewer: no action controls, and a post is refused.
    c.find(Locator::Css("form[action='/signout'] button"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    sign_in(&c, &second.api, VIEWER).await;
    assert!(
        until(Duration::from_secs(10), || async {
            c.find(Locator::Css("tr[id^='alert-']")).await.is_ok()
        })
        .await,
        "the viewer sees the alerts"
    );
    assert!(
        c.find_all(Locator::Css("button[data-action]"))
            .await
            .unwrap()
            .is_empty(),
        "no action controls"
    );
    screenshot(&c, "inbox-viewer.png").await;
    let status = c
        .execute_async(
            "const [id, done] = arguments; fetch('/ui/alerts/' + id + '/ack', {method: 'POST', credentials: 'same-origin', \
             headers: {'Content-Type': 'application/x-www-form-urlencoded'}, body: 'note=forged'}).then(r => done(r.status));",
            vec![serde_json::json!(first_id)],
        )
        .await
        .unwrap();
    assert_eq!(status, 403, "a viewer's post is refused");
    // The operator's cookie, posted from another site: refused too.
    let cookie = c.get_named_cookie("churnwatch_session").await.unwrap();
    let forged = reqwest::Client::new()
        .post(format!("{}/ui/alerts/{first_id}/close", second.api))
        .header("Cookie", format!("churnwatch_session={}", cookie.value()))
        .header("Origin", "https://evil.example")
        .header("Content-Type", "application/x-www-form-urlencoded")
        .body("reason=lost")
        .send()
        .await
        .unwrap();
    assert_eq!(
        forged.status().as_u16(),
        403,
        "a cross-site post is refused"
    );
    c.close().await.unwrap();
    stop.cancel();
    second.handle.await.expect("join").expect("service");
}
