//! What kimchid remembers to keep protected calls fast never outlives what it stands
//! for: a polkit rule change judges the very next request, and a refused password
//! forgets the one remembered for Basic auth (a logout ending the session's next
//! request is in `rest_auth.rs`). Each test warms what is remembered first, so a stale
//! answer would show.

use std::path::PathBuf;
use std::time::Duration;

use futures_util::StreamExt;
use kimchi_tests::{
    ensure_test_users, ensure_user, login, request, run_with_stdin, system_bus, unique_name,
    Session, TestUser,
};
use zbus::message::Type as MessageType;
use zbus::{MatchRule, MessageStream};

/// A reader whose rights this file's rule takes away and gives back.
const RULED: TestUser = TestUser {
    name: "kimchi-t-ruled",
    password: "Ruled-t-pass-4",
    group: Some("kimchi-users"),
};
/// A reader whose password this file changes.
const ROTATED: TestUser = TestUser {
    name: "kimchi-t-rotated",
    password: "Rotated-t-pass-5",
    group: Some("kimchi-users"),
};

/// Where administrators put local rules; polkitd reloads it when a file changes.
const RULES_DIR: &str = "/etc/polkit-1/rules.d";

/// A small read (the VM list can be long on a benchmark host).
fn get_pools(session: &Session) -> u16 {
    request("GET", "/storagepools")
        .session(session)
        .send()
        .status
}

async fn polkit_changes() -> MessageStream {
    let rule = MatchRule::builder()
        .msg_type(MessageType::Signal)
        .sender("org.freedesktop.PolicyKit1")
        .interface("org.freedesktop.PolicyKit1.Authority")
        .member("Changed")
        .build()
        .expect("a match rule");
    MessageStream::for_match_rule(rule, &system_bus().await, None)
        .await
        .expect("subscribe to polkit's Changed")
}

/// Waits for polkitd to say it reloaded; the next request must see the new rules.
async fn reloaded(changes: &mut MessageStream) {
    tokio::time::timeout(Duration::from_secs(30), changes.next())
        .await
        .expect("polkitd announces the reload within 30 s")
        .expect("the signal stream stays open")
        .expect("a signal");
}

/// A rule file that denies `org.kimchi.read` to one web user; removed when dropped.
struct DenyRule(PathBuf);

impl DenyRule {
    fn write(user: &str) -> DenyRule {
        // Sorts before the shipped 50-kimchi-gateway.rules, so it is asked first.
        let path = PathBuf::from(RULES_DIR).join(format!("00-{}.rules", unique_name("deny")));
        let rule = format!(
            "polkit.addRule(function (action, subject) {{\n  \
               if (action.id == \"org.kimchi.read\" &&\n      \
                   action.lookup(\"kimchi.web.user\") == \"{user}\") {{\n    \
                 return polkit.Result.NO;\n  }}\n}});\n"
        );
        std::fs::write(&path, rule).expect("write the rule file");
        DenyRule(path)
    }
}

impl Drop for DenyRule {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_rule_change_judges_the_next_request() {
    let session = tokio::task::block_in_place(|| {
        ensure_test_users();
        ensure_user(RULED);
        let session = login(RULED);
        for _ in 0..3 {
            assert_eq!(get_pools(&session), 200, "a reader may list pools");
        }
        session
    });

    let mut changes = polkit_changes().await;
    let rule = DenyRule::write(RULED.name);
    reloaded(&mut changes).await;
    tokio::task::block_in_place(|| {
        let resp = request("GET", "/storagepools").session(&session).send();
        let body = resp.assert_error(403);
        assert!(
            body["reason"]
                .as_str()
                .is_some_and(|r| r.contains("org.kimchi.read")),
            "{body}"
        );
    });

    drop(rule);
    reloaded(&mut changes).await;
    tokio::task::block_in_place(|| assert_eq!(get_pools(&session), 200, "the right is back"));
}

fn basic_get(user: &str, password: &str) -> u16 {
    request("GET", "/storagepools")
        .basic_auth(user, password)
        .header("Accept", "application/json")
        .send()
        .status
}

#[test]
fn a_refused_password_forgets_the_remembered_one() {
    ensure_test_users();
    ensure_user(ROTATED);
    assert_eq!(basic_get(ROTATED.name, ROTATED.password), 200);
    assert_eq!(basic_get(ROTATED.name, ROTATED.password), 200);

    let new_password = "Rotated-t-pass-6";
    let line = format!("{}:{new_password}\n", ROTATED.name);
    run_with_stdin(&mut std::process::Command::new("chpasswd"), line.as_bytes()).expect_ok();
    assert_eq!(basic_get(ROTATED.name, "not-the-password"), 401);
    assert_eq!(
        basic_get(ROTATED.name, ROTATED.password),
        401,
        "after a refusal the old password is asked of PAM again, which refuses it"
    );
    assert_eq!(basic_get(ROTATED.name, new_password), 200);
}
