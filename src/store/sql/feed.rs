//! The change log read back: the store's revision, which rows changed after a revision, and
//! those rows alone (or, when the log cannot say, every row), so that a cache of the store
//! ([`crate::mirror::Mirror`]) follows a change at the cost of the change.

use std::collections::BTreeSet;

use crate::model::{Client, FeatureFlag, Override, Profile, Sinks, Stored, Window};
use crate::store::backend::{Backend, Tx, on};
use crate::store::rows::{ClientRow, FlagRow, OverrideRow, RuleRecordRow, WindowRow, columns, lenient};
use crate::store::{Db, ModeRecord, RuleRecord, StoreError};

/// The most log rows read to follow a change; past it, the caches read everything again (it is
/// then cheaper than naming each row).
const MAX_ROWS: i64 = 5_000;

/// A table the change log follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Logged {
    Rules,
    Clients,
    Windows,
    Mode,
    Flags,
    Settings,
    Overrides,
}

impl Logged {
    fn of(table: &str) -> Option<Logged> {
        Some(match table {
            "rate_limit_rules" => Logged::Rules,
            "api_clients" => Logged::Clients,
            "maintenance_windows" => Logged::Windows,
            "maintenance_state" => Logged::Mode,
            "feature_flags" => Logged::Flags,
            "settings" => Logged::Settings,
            "overrides" => Logged::Overrides,
            _ => return None,
        })
    }
}

/// What changed after a revision, as the log names it.
#[derive(Debug, Default)]
struct Named {
    /// The newest revision read.
    revision: i64,
    /// The log cannot say (it no longer reaches back that far, a statement changed too many
    /// rows to name, or there is too much to follow row by row): read everything.
    unknown: bool,
    rules: BTreeSet<i64>,
    clients: BTreeSet<i64>,
    windows: BTreeSet<i64>,
    flags: BTreeSet<i64>,
    /// Overrides changed (set, cleared): followed row by row, as thousands may be open.
    overrides: BTreeSet<i64>,
    /// Tables read whole whatever the rows (they are small): the mode, settings.
    mode: bool,
    settings: bool,
}

impl Named {
    fn is_empty(&self) -> bool {
        !self.unknown
            && !self.mode
            && !self.settings
            && self.overrides.is_empty()
            && self.rules.is_empty()
            && self.clients.is_empty()
            && self.windows.is_empty()
            && self.flags.is_empty()
    }
}

/// Rows of the store as the caches hold them: every row of each table (a whole read), or the
/// rows the change log named that still exist (a followed change). A resource row that does not
/// decode is left out with a warning and its id listed in `unreadable`: one row edited by hand
/// into something invalid must not stop a server from serving the rest, and a planner must
/// know it is missing (planning around it could write a second one). The mode, the profile and
/// the overrides must decode.
#[derive(Debug, Default)]
pub struct Rows {
    /// Rules, enabled or not.
    pub rules: Vec<RuleRecord>,
    /// Clients, active or not.
    pub clients: Vec<Stored<Client>>,
    /// Windows, active or not.
    pub windows: Vec<Stored<Window>>,
    pub flags: Vec<Stored<FeatureFlag>>,
    /// The mode row, when it was read: always in a whole read (it fails when the row is
    /// missing), in a followed change only when the mode changed.
    pub mode: Option<ModeRecord>,
    /// The deployment profile, when read (as `mode`; the inner `None`: none is set).
    pub profile: Option<Option<Stored<Profile>>>,
    /// The notification sinks, when read (as `profile`).
    pub notifications: Option<Option<Stored<Sinks>>>,
    /// Open overrides: every one in a whole read; in a followed change, those of the named
    /// rows still open (`None` when none was named).
    pub overrides: Option<Vec<Override>>,
    /// The rows read that did not decode, by table.
    pub unreadable: RowIds,
}

/// Row ids by table: those a followed change names (an id named whose row is not in [`Rows`] is
/// gone, or did not decode), or those that did not decode.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RowIds {
    pub rules: Vec<i64>,
    pub clients: Vec<i64>,
    pub windows: Vec<i64>,
    pub flags: Vec<i64>,
    /// Overrides: an id named whose row is not in [`Rows::overrides`] was cleared.
    pub overrides: Vec<i64>,
}

/// What a cache at a revision must read to be at the store's revision.
#[derive(Debug)]
pub enum Change {
    /// Nothing changed.
    None,
    /// The log cannot say what changed: everything, read again.
    Whole(Rows),
    /// The rows the log names, read again.
    Named(RowIds, Rows),
}

/// What changed after a revision, and the revision it brings the cache to.
#[derive(Debug)]
pub struct Followed {
    pub revision: i64,
    pub change: Change,
}

/// `id IN (…)` over a JSON array of ids bound as text: one statement and one bound value
/// whatever the count, on either backend.
fn ids_in(backend: &Tx<'_>) -> &'static str {
    match backend {
        Backend::Postgres(_) => "id IN (SELECT jsonb_array_elements_text($1::jsonb)::bigint)",
        Backend::Sqlite(_) => "id IN (SELECT value FROM json_each($1))",
    }
}

fn json_ids(ids: &BTreeSet<i64>) -> String {
    serde_json::to_string(ids).unwrap_or_else(|_| "[]".into())
}

impl Db {
    /// Every row the caches hold, and the store's revision they are exact at, in one snapshot.
    pub async fn rows(&self) -> Result<(i64, Rows), StoreError> {
        let mut tx = self.begin_read().await?;
        // The revision first: the rows read afterwards are at least that new.
        let revision = tx.revision().await?;
        let rows = tx.read_rows(None).await?;
        tx.commit().await?;
        Ok((revision, rows))
    }

    /// What a cache exact at revision `since` must read to be at the store's revision: nothing,
    /// the rows the change log names, or (the log cannot say) everything.
    pub async fn follow(&self, since: i64) -> Result<Followed, StoreError> {
        let mut tx = self.begin_read().await?;
        let named = tx.named_since(since).await?;
        let revision = named.revision;
        let change = if named.unknown {
            Change::Whole(tx.read_rows(None).await?)
        } else if named.is_empty() {
            Change::None
        } else {
            tx.named_rows(named).await?
        };
        tx.commit().await?;
        Ok(Followed { revision, change })
    }
}

/// The newest revision of the change log (0 before any change).
pub(in crate::store) const REVISION: &str = "SELECT COALESCE(MAX(revision), 0) FROM store_changes";

impl Tx<'_> {
    /// The newest revision of the change log.
    pub(in crate::store) async fn revision(&mut self) -> Result<i64, StoreError> {
        Ok(on!(self, |c| sqlx::query_scalar::<_, i64>(REVISION)
            .fetch_one(&mut **c)
            .await)?)
    }

    /// What the log names after `since`. The revision is read first: rows read afterwards are at
    /// least that new, and reading a row twice is harmless.
    async fn named_since(&mut self, since: i64) -> Result<Named, StoreError> {
        let revision = self.revision().await?;
        let mut named = Named {
            revision,
            ..Named::default()
        };
        if since == revision {
            return Ok(named);
        }
        // The entry at `since` itself comes first if the log still reaches back to it: the log
        // is trimmed from its oldest end, so then nothing after it is missing.
        let sql = "SELECT revision, table_name, row_id FROM store_changes \
                   WHERE revision >= $1 AND revision <= $2 ORDER BY revision LIMIT $3";
        let rows: Vec<(i64, String, Option<i64>)> = on!(self, |c| sqlx::query_as(sql)
            .bind(since)
            .bind(revision)
            .bind(MAX_ROWS + 1)
            .fetch_all(&mut **c)
            .await)?;
        if rows.first().is_none_or(|(r, _, _)| *r != since) || rows.len() as i64 > MAX_ROWS {
            named.unknown = true;
            return Ok(named);
        }
        for (_, table, row) in rows.into_iter().skip(1) {
            let Some(table) = Logged::of(&table) else { continue };
            let ids = match table {
                Logged::Rules => &mut named.rules,
                Logged::Clients => &mut named.clients,
                Logged::Windows => &mut named.windows,
                Logged::Flags => &mut named.flags,
                Logged::Mode => {
                    named.mode = true;
                    continue;
                }
                Logged::Settings => {
                    named.settings = true;
                    continue;
                }
                Logged::Overrides => &mut named.overrides,
            };
            match row {
                Some(id) => {
                    ids.insert(id);
                }
                None => named.unknown = true,
            }
        }
        Ok(named)
    }

    /// The rows of `table` among `ids` (those that still exist), one statement whatever the
    /// count.
    async fn by_id<R>(
        &mut self,
        table: &str,
        columns: &str,
        ids: &BTreeSet<i64>,
    ) -> Result<Vec<R>, StoreError>
    where
        R: for<'r> sqlx::FromRow<'r, sqlx::postgres::PgRow>
            + for<'r> sqlx::FromRow<'r, sqlx::sqlite::SqliteRow>
            + Send
            + Unpin,
    {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let sql = format!("SELECT {columns} FROM {table} WHERE {}", ids_in(self));
        let ids = json_ids(ids);
        Ok(on!(self, |c| sqlx::query_as::<_, R>(sqlx::AssertSqlSafe(sql))
            .bind(&ids)
            .fetch_all(&mut **c)
            .await)?)
    }

    /// The rows `named` names, or (`None`) every row the caches hold, in the transaction's
    /// snapshot; one statement a table.
    async fn read_rows(&mut self, named: Option<&Named>) -> Result<Rows, StoreError> {
        macro_rules! every {
            ($columns:ident, $table:literal) => {
                concat!(
                    "SELECT ",
                    columns!($columns),
                    " FROM ",
                    $table,
                    " ORDER BY id"
                )
            };
        }
        let (rules, clients, windows, flags): (
            Vec<RuleRecordRow>,
            Vec<ClientRow>,
            Vec<WindowRow>,
            Vec<FlagRow>,
        ) = match named {
            None => (
                self.all(every!(rule_records, "rate_limit_rules")).await?,
                self.all(every!(clients, "api_clients")).await?,
                self.all(every!(windows, "maintenance_windows")).await?,
                self.all(every!(flags, "feature_flags")).await?,
            ),
            Some(n) => (
                self.by_id("rate_limit_rules", columns!(rule_records), &n.rules)
                    .await?,
                self.by_id("api_clients", columns!(clients), &n.clients).await?,
                self.by_id("maintenance_windows", columns!(windows), &n.windows)
                    .await?,
                self.by_id("feature_flags", columns!(flags), &n.flags).await?,
            ),
        };
        // The small tables are read whole: always in a whole read, when named in a followed one.
        let read = |flag: fn(&Named) -> bool| named.is_none_or(flag);
        let mut unreadable = RowIds::default();
        Ok(Rows {
            rules: lenient(rules, RuleRecordRow::record, &mut unreadable.rules)?,
            clients: lenient(clients, ClientRow::stored, &mut unreadable.clients)?,
            windows: lenient(windows, WindowRow::stored, &mut unreadable.windows)?,
            flags: lenient(flags, FlagRow::stored, &mut unreadable.flags)?,
            mode: match read(|n| n.mode) {
                true => Some(self.mode_record().await?),
                false => None,
            },
            profile: match read(|n| n.settings) {
                true => Some(self.profile().await?),
                false => None,
            },
            notifications: match read(|n| n.settings) {
                true => Some(self.sinks().await?),
                false => None,
            },
            overrides: match named {
                None => Some(self.open_overrides().await?),
                Some(n) if n.overrides.is_empty() => None,
                Some(n) => Some(self.open_overrides_by_id(&n.overrides).await?),
            },
            unreadable,
        })
    }

    /// The rows `named` names, read again.
    async fn named_rows(&mut self, named: Named) -> Result<Change, StoreError> {
        let rows = self.read_rows(Some(&named)).await?;
        let ids = RowIds {
            rules: named.rules.into_iter().collect(),
            clients: named.clients.into_iter().collect(),
            windows: named.windows.into_iter().collect(),
            flags: named.flags.into_iter().collect(),
            overrides: named.overrides.into_iter().collect(),
        };
        Ok(Change::Named(ids, rows))
    }

    /// Every row a query returns.
    async fn all<R>(&mut self, sql: &'static str) -> Result<Vec<R>, StoreError>
    where
        R: for<'r> sqlx::FromRow<'r, sqlx::postgres::PgRow>
            + for<'r> sqlx::FromRow<'r, sqlx::sqlite::SqliteRow>
            + Send
            + Unpin,
    {
        Ok(on!(self, |c| sqlx::query_as::<_, R>(sql)
            .fetch_all(&mut **c)
            .await)?)
    }

    /// The mode row, which the first migration writes.
    async fn mode_record(&mut self) -> Result<ModeRecord, StoreError> {
        self.the_mode_row().await?.record()
    }

    /// The overrides of `ids` not cleared yet.
    async fn open_overrides_by_id(&mut self, ids: &BTreeSet<i64>) -> Result<Vec<Override>, StoreError> {
        // A cleared one is gone, as far as the caches care.
        let sql = format!(
            concat!(
                "SELECT ",
                columns!(overrides),
                " FROM overrides WHERE cleared_at IS NULL AND {}"
            ),
            ids_in(self)
        );
        let ids = json_ids(ids);
        let rows = on!(self, |c| sqlx::query_as::<_, OverrideRow>(sqlx::AssertSqlSafe(
            sql
        ))
        .bind(&ids)
        .fetch_all(&mut **c)
        .await)?;
        rows.into_iter().map(OverrideRow::parse).collect()
    }

    /// Forgets change-log entries far behind the newest: a cache that far behind reads
    /// everything again.
    pub(in crate::store) async fn trim_changes(&mut self) -> Result<(), sqlx::Error> {
        let sql = "DELETE FROM store_changes WHERE revision < (SELECT MAX(revision) FROM store_changes) - $1";
        on!(self, |c| sqlx::query(sql)
            .bind(KEEP)
            .execute(&mut **c)
            .await
            .map(drop))
    }
}

/// How many change-log entries are kept: enough for every cache to follow the last minutes of
/// changes row by row.
const KEEP: i64 = 20_000;
