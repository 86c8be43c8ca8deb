//! The change log read back: the store's revision, which rows changed after a revision, and
//! those rows alone, so that caches (a replica's view, the watch loop's snapshot) follow a
//! change at the cost of the change.

use std::collections::BTreeSet;

use crate::model::{Actual, Client, FeatureFlag, Override, RateLimitRule, Stored, Window};
use crate::store::backend::{Backend, Tx, on};
use crate::store::rows::{ClientRow, FlagRow, RuleRecordRow, RuleRow, WindowRow, columns, readable};
use crate::store::{Db, LiveState, RuleRecord, StoreError};

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
    /// Tables read whole whatever the rows (they are small): the mode, settings, overrides.
    mode: bool,
    settings: bool,
    overrides: bool,
    /// The overrides named (for the replicas, which care only about mode overrides).
    override_ids: BTreeSet<i64>,
}

impl Named {
    fn is_empty(&self) -> bool {
        !self.unknown
            && !self.mode
            && !self.settings
            && !self.overrides
            && self.rules.is_empty()
            && self.clients.is_empty()
            && self.windows.is_empty()
            && self.flags.is_empty()
    }
}

/// A replica's view brought up to a revision.
#[derive(Debug)]
pub enum LiveChange {
    /// Nothing it caches changed.
    None,
    /// Everything, read again.
    Whole(LiveState),
    /// The rows that changed, read again.
    Rows(LiveRows),
}

/// Rows read again by id; an id asked about and not returned is gone (deleted, or for clients,
/// deactivated).
#[derive(Debug, Default)]
pub struct LiveRows {
    pub rule_ids: Vec<i64>,
    pub rules: Vec<RuleRecord>,
    pub client_ids: Vec<i64>,
    /// The active ones among `client_ids`.
    pub clients: Vec<Stored<Client>>,
    /// The maintenance inputs, when the mode, a window or an override changed.
    pub maintenance: Option<crate::model::MaintenanceInputs>,
}

/// A planner's snapshot brought up to a revision.
#[derive(Debug)]
pub enum ActualChange {
    None,
    Whole(Actual),
    Rows(ActualRows),
}

/// Rows read again by id; an id asked about and not returned was deleted.
#[derive(Debug, Default)]
pub struct ActualRows {
    pub rule_ids: Vec<i64>,
    pub rules: Vec<Stored<RateLimitRule>>,
    pub client_ids: Vec<i64>,
    pub clients: Vec<Stored<Client>>,
    pub window_ids: Vec<i64>,
    pub windows: Vec<Stored<Window>>,
    pub flag_ids: Vec<i64>,
    pub flags: Vec<Stored<FeatureFlag>>,
    /// The mode row, when it changed.
    pub maintenance: Option<Option<Stored<crate::model::Maintenance>>>,
    /// The profile row, when settings changed.
    pub profile: Option<Option<Stored<crate::model::Profile>>>,
    /// Every open override, when any override changed.
    pub overrides: Option<Vec<Override>>,
}

/// What changed after a revision, and the revision it brings the cache to.
#[derive(Debug)]
pub struct Followed<T> {
    pub revision: i64,
    pub change: T,
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
    /// What a replica caching the live state at `since` must read to be at the store's
    /// revision: nothing, the changed rows, or (`since` unknown to the log) everything.
    pub async fn follow_live(&self, since: Option<i64>) -> Result<Followed<LiveChange>, StoreError> {
        let mut tx = self.begin_read().await?;
        let named = tx.named_since(since).await?;
        let change = if named.unknown {
            LiveChange::Whole(tx.live().await?)
        } else if named.rules.is_empty()
            && named.clients.is_empty()
            && named.windows.is_empty()
            && !named.mode
            && !named.overrides
        {
            LiveChange::None
        } else {
            let rules: Vec<RuleRecordRow> = tx
                .by_id("rate_limit_rules", columns!(rule_records), &named.rules)
                .await?;
            let rules = readable(rules, RuleRecordRow::record)?;
            let clients: Vec<ClientRow> = tx.by_id("api_clients", columns!(clients), &named.clients).await?;
            let clients: Vec<Stored<Client>> = readable(clients, ClientRow::stored)?;
            // An override of a rule or a client (the usual emergency change) leaves the
            // maintenance inputs, and their thousand windows, as they are.
            let maintenance =
                if named.windows.is_empty() && !named.mode && !tx.touches_mode(&named.override_ids).await? {
                    None
                } else {
                    Some(tx.maintenance().await?)
                };
            LiveChange::Rows(LiveRows {
                rule_ids: named.rules.iter().copied().collect(),
                rules,
                client_ids: named.clients.iter().copied().collect(),
                clients: clients.into_iter().filter(|c| c.value.active).collect(),
                maintenance,
            })
        };
        tx.commit().await?;
        Ok(Followed {
            revision: named.revision,
            change,
        })
    }

    /// What a planner caching a snapshot at `since` must read to be at the store's revision.
    pub async fn follow_actual(&self, since: Option<i64>) -> Result<Followed<ActualChange>, StoreError> {
        let mut tx = self.begin_read().await?;
        let named = tx.named_since(since).await?;
        let change = if named.unknown {
            ActualChange::Whole(tx.actual().await?)
        } else if named.is_empty() {
            ActualChange::None
        } else {
            ActualChange::Rows(tx.actual_rows(&named).await?)
        };
        tx.commit().await?;
        Ok(Followed {
            revision: named.revision,
            change,
        })
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
    async fn named_since(&mut self, since: Option<i64>) -> Result<Named, StoreError> {
        let revision = self.revision().await?;
        let mut named = Named {
            revision,
            ..Named::default()
        };
        let Some(since) = since else {
            named.unknown = true;
            return Ok(named);
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
                Logged::Overrides => {
                    named.overrides = true;
                    &mut named.override_ids
                }
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

    /// Whether the overrides of `ids` may include a maintenance-mode override (one that is
    /// gone counts: what it was is unknown).
    async fn touches_mode(&mut self, ids: &BTreeSet<i64>) -> Result<bool, StoreError> {
        if ids.is_empty() {
            return Ok(false);
        }
        let sql = format!(
            "SELECT COUNT(*), COUNT(*) FILTER (WHERE resource_kind = 'maintenance_mode') FROM overrides WHERE {}",
            ids_in(self)
        );
        let ids_json = json_ids(ids);
        let (found, mode): (i64, i64) = on!(self, |c| sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(&ids_json)
            .fetch_one(&mut **c)
            .await)?;
        Ok(mode > 0 || found < ids.len() as i64)
    }

    /// The planner's rows that `named` names, read again.
    async fn actual_rows(&mut self, named: &Named) -> Result<ActualRows, StoreError> {
        let rules: Vec<RuleRow> = self
            .by_id("rate_limit_rules", columns!(rules), &named.rules)
            .await?;
        let clients: Vec<ClientRow> = self
            .by_id("api_clients", columns!(clients), &named.clients)
            .await?;
        let windows: Vec<WindowRow> = self
            .by_id("maintenance_windows", columns!(windows), &named.windows)
            .await?;
        let flags: Vec<FlagRow> = self.by_id("feature_flags", columns!(flags), &named.flags).await?;
        let mut out = ActualRows {
            rule_ids: named.rules.iter().copied().collect(),
            rules: rules.into_iter().map(RuleRow::stored).collect::<Result<_, _>>()?,
            client_ids: named.clients.iter().copied().collect(),
            clients: clients
                .into_iter()
                .map(ClientRow::stored)
                .collect::<Result<_, _>>()?,
            window_ids: named.windows.iter().copied().collect(),
            windows: windows
                .into_iter()
                .map(WindowRow::stored)
                .collect::<Result<_, _>>()?,
            flag_ids: named.flags.iter().copied().collect(),
            flags: flags.into_iter().map(FlagRow::stored).collect::<Result<_, _>>()?,
            ..ActualRows::default()
        };
        if named.mode {
            out.maintenance = Some(self.mode_row().await?.map(|m| m.stored()).transpose()?);
        }
        if named.settings {
            let profile = self.profile_row().await?;
            out.profile = Some(profile.map(crate::store::rows::ProfileRow::stored).transpose()?);
        }
        if named.overrides {
            out.overrides = Some(self.open_overrides().await?);
        }
        Ok(out)
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
