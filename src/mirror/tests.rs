//! A mirror followed through random writes (over the API, by hand, rows made unreadable and
//! fixed) equals a mirror read whole after every write, on SQLite and on Postgres.

use chrono::{Duration, Utc};
use proptest::prelude::*;

use super::{Mirror, Step};
use crate::calendar::{Interval, When};
use crate::domain::{ClientName, ClientType, KeySha256, Mode, Role, Scope, WindowMode, WindowName};
use crate::model::{Client, Window};
use crate::store::testing::{drop_postgres, postgres, runtime, sqlite};
use crate::store::{ApiChange, Backend, Db, Lift, Lifting};

#[derive(Debug, Clone)]
enum Write {
    /// A rule written over the API (an override when git owns it; here the API owns it).
    PutRule { n: u8, max: u32 },
    /// A rule deleted by hand.
    DeleteRule { n: u8 },
    /// A client registered over the API (refused when the name is taken).
    Register { n: u8 },
    /// A client deactivated or reactivated by hand.
    Activate { n: u8, active: bool },
    /// A window created over the API.
    Window { n: u8 },
    /// The mode set over the API: an override.
    Mode { maintenance: bool },
    /// Every override lifted.
    Lift,
    /// A rule made unreadable by hand (its key is no address for the scope it is given), or
    /// made readable again.
    Corrupt { n: u8, bad: bool },
}

fn write() -> impl Strategy<Value = Write> {
    prop_oneof![
        4 => (0..8u8, 1..100u32).prop_map(|(n, max)| Write::PutRule { n, max }),
        2 => (0..8u8).prop_map(|n| Write::DeleteRule { n }),
        2 => (0..4u8).prop_map(|n| Write::Register { n }),
        2 => (0..4u8, any::<bool>()).prop_map(|(n, active)| Write::Activate { n, active }),
        1 => (0..4u8).prop_map(|n| Write::Window { n }),
        1 => any::<bool>().prop_map(|maintenance| Write::Mode { maintenance }),
        1 => Just(Write::Lift),
        1 => (0..8u8, any::<bool>()).prop_map(|(n, bad)| Write::Corrupt { n, bad }),
    ]
}

/// A statement run by hand, with one text parameter.
async fn by_hand(db: &Db, sql: &'static str, value: String) {
    match db.pool() {
        Backend::Postgres(p) => sqlx::query(sql).bind(value).execute(p).await.map(drop),
        Backend::Sqlite(p) => sqlx::query(sql).bind(value).execute(p).await.map(drop),
    }
    .unwrap();
}

/// Makes `w`; writes the store refuses (a name taken, a rule missing) change nothing.
async fn make(db: &Db, w: &Write) {
    let now = Utc::now();
    let change = ApiChange {
        actor: "test".into(),
        reason: Some("test".into()),
        expires_at: None,
        now,
        group_id: None,
    };
    match *w {
        Write::PutRule { n, max } => {
            let (_, rule) = crate::limit::table::tests::record(0, Scope::User, &format!("user-{n}"), max);
            let _ = db.put_rule(&rule, &change).await;
        }
        Write::DeleteRule { n } => {
            by_hand(
                db,
                "DELETE FROM rate_limit_rules WHERE key = $1",
                format!("user-{n}"),
            )
            .await;
        }
        Write::Register { n } => {
            let client = Client {
                name: ClientName::parse(format!("client-{n}")).unwrap(),
                client_type: ClientType::Integration,
                role: Role::Reader,
                key_sha256: KeySha256::of_key(&format!("key-{n}")),
                active: true,
                description: String::new(),
            };
            let _ = db.register_client(&client, "vo_test", &change).await;
        }
        Write::Activate { n, active } => {
            let sql = if active {
                "UPDATE api_clients SET active = TRUE WHERE name = $1"
            } else {
                "UPDATE api_clients SET active = FALSE WHERE name = $1"
            };
            by_hand(db, sql, format!("client-{n}")).await;
        }
        Write::Window { n } => {
            let window = Window {
                name: WindowName::parse(format!("window-{n}")).unwrap(),
                when: When::Once(Interval {
                    starts_at: now + Duration::hours(i64::from(n)),
                    ends_at: now + Duration::hours(i64::from(n) + 1),
                }),
                mode: WindowMode::Maintenance,
                active: true,
                description: String::new(),
            };
            let _ = db.create_window(&window, &change).await;
        }
        Write::Mode { maintenance } => {
            let mode = if maintenance {
                Mode::Maintenance
            } else {
                Mode::Normal
            };
            db.set_mode(mode, &change).await.unwrap();
        }
        Write::Lift => {
            let lift = Lift {
                actor: "test",
                source: "api",
                reason: None,
                now,
            };
            db.clear_overrides(Lifting::Every, &lift).await.unwrap();
        }
        Write::Corrupt { n, bad } => {
            let sql = if bad {
                "UPDATE rate_limit_rules SET scope = 'ip' WHERE key = $1"
            } else {
                "UPDATE rate_limit_rules SET scope = 'user' WHERE key = $1"
            };
            by_hand(db, sql, format!("user-{n}")).await;
        }
    }
}

async fn run(db: &Db, writes: Vec<Write>) -> Result<(), TestCaseError> {
    let mut mirror = Mirror::load(db).await.unwrap();
    for w in &writes {
        make(db, w).await;
        let step = mirror.follow(db).await.unwrap();
        let whole = Mirror::load(db).await.unwrap();
        prop_assert_eq!(&mirror, &whole, "after {:?}", w);
        // What the step says each named row now is, the mirror holds.
        if let Step::Rows(delta) = step {
            for swap in &delta.rules {
                if let Some(after) = &swap.after {
                    prop_assert_eq!(mirror.rule(after.id), Some(after));
                }
            }
        }
    }
    prop_assert!(!writes.is_empty());
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 16, ..ProptestConfig::default() })]

    #[test]
    fn a_followed_mirror_equals_one_read_whole_on_sqlite(writes in prop::collection::vec(write(), 1..16)) {
        runtime().block_on(async {
            let (db, _dir) = sqlite().await;
            run(&db, writes).await
        })?;
    }

    #[test]
    fn a_followed_mirror_equals_one_read_whole_on_postgres(writes in prop::collection::vec(write(), 1..16)) {
        runtime().block_on(async {
            let Some((db, admin, name)) = postgres("mirror property test").await else { return Ok(()) };
            let result = run(&db, writes).await;
            drop_postgres(db, &admin, &name).await;
            result
        })?;
    }
}

/// A row that does not decode is left out of the mirror and makes it incomplete until it is
/// fixed; the rest is still there.
#[test]
fn an_unreadable_row_is_left_out_and_named_until_fixed() {
    runtime().block_on(async {
        let (db, _dir) = sqlite().await;
        for n in 0..2 {
            make(&db, &Write::PutRule { n, max: 5 }).await;
        }
        let mut mirror = Mirror::load(&db).await.unwrap();
        assert!(mirror.complete());
        make(&db, &Write::Corrupt { n: 0, bad: true }).await;
        mirror.follow(&db).await.unwrap();
        assert!(!mirror.complete());
        assert_eq!(mirror.rule_map().len(), 1);
        assert!(!Mirror::load(&db).await.unwrap().complete());
        make(&db, &Write::Corrupt { n: 0, bad: false }).await;
        mirror.follow(&db).await.unwrap();
        assert!(mirror.complete());
        assert_eq!(mirror.rule_map().len(), 2);
    });
}
