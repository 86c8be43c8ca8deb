//! The platform's settings: the maintenance mode (in force and as git declared it), feature
//! flags and the deployment profile; set over HTTP always as overrides.

use chrono::{DateTime, Utc};

use crate::domain::{FlagName, Mode, ProfileName};
use crate::event::Event;
use crate::model::{FeatureFlag, Maintenance, MaintenanceInputs, Override, Profile, Resource, Sinks, Stored};
use crate::store::backend::{Tx, on};
use crate::store::rows::{FlagRecordRow, FlagRow, ModeRow, OverrideRow, SettingRow, columns};
use crate::store::sql::overrides::always_hold;
use crate::store::writes::{NOTIFICATIONS_SETTING, PROFILE_SETTING};
use crate::store::{ApiChange, Db, FlagRecord, StoreError};

impl Db {
    /// What the effective maintenance mode depends on, read in one snapshot.
    pub async fn maintenance(&self) -> Result<MaintenanceInputs, StoreError> {
        let mut tx = self.begin_read().await?;
        let inputs = tx.maintenance().await?;
        tx.commit().await?;
        Ok(inputs)
    }

    /// Sets the maintenance mode for an HTTP caller: always an override (it needs a reason),
    /// which the reconciler holds until it ends.
    pub async fn set_mode(&self, mode: Mode, change: &ApiChange) -> Result<Override, StoreError> {
        let mut tx = self.begin_apply().await?;
        let hold = tx.set_mode(mode, change).await?;
        self.commit(tx).await?;
        Ok(hold)
    }

    /// Every feature flag, by name.
    pub async fn flags(&self) -> Result<Vec<FlagRecord>, StoreError> {
        let sql = concat!(
            "SELECT ",
            columns!(flag_records),
            " FROM feature_flags ORDER BY name"
        );
        let mut conn = self.conn().await?;
        let rows = on!(&mut conn, |c| sqlx::query_as::<_, FlagRecordRow>(sql)
            .fetch_all(&mut **c)
            .await)?;
        rows.into_iter().map(FlagRecordRow::record).collect()
    }
}

impl Tx<'_> {
    /// The row of `maintenance_state` (the first migration writes it).
    pub(in crate::store) async fn mode_row(&mut self) -> Result<Option<ModeRow>, StoreError> {
        let sql = concat!("SELECT ", columns!(mode), " FROM maintenance_state");
        Ok(on!(self, |c| sqlx::query_as::<_, ModeRow>(sql)
            .fetch_optional(&mut **c)
            .await)?)
    }

    /// The row of `maintenance_state`, which must be there.
    pub(in crate::store) async fn the_mode_row(&mut self) -> Result<ModeRow, StoreError> {
        Ok(self.mode_row().await?.ok_or(sqlx::Error::RowNotFound)?)
    }

    /// The `settings` row named `name`, once one has been written.
    async fn setting_row(&mut self, name: &str) -> Result<Option<SettingRow>, StoreError> {
        let sql = concat!("SELECT ", columns!(setting), " FROM settings WHERE name = $1");
        Ok(on!(self, |c| sqlx::query_as::<_, SettingRow>(sql)
            .bind(name)
            .fetch_optional(&mut **c)
            .await)?)
    }

    /// The deployment profile, once one has been set.
    pub(in crate::store) async fn profile(&mut self) -> Result<Option<Stored<Profile>>, StoreError> {
        self.setting_row(PROFILE_SETTING)
            .await?
            .map(SettingRow::profile)
            .transpose()
    }

    /// The notification sinks, once git has declared them.
    pub(in crate::store) async fn sinks(&mut self) -> Result<Option<Stored<Sinks>>, StoreError> {
        self.setting_row(NOTIFICATIONS_SETTING)
            .await?
            .map(SettingRow::sinks)
            .transpose()
    }

    /// What the effective maintenance mode depends on, without reading every resource.
    pub(in crate::store) async fn maintenance(&mut self) -> Result<MaintenanceInputs, StoreError> {
        let row = self.the_mode_row().await?;
        let sql = concat!(
            "SELECT ",
            columns!(overrides),
            " FROM overrides WHERE cleared_at IS NULL AND resource_kind = 'maintenance_mode' ORDER BY id"
        );
        let overrides = on!(self, |c| sqlx::query_as::<_, OverrideRow>(sql)
            .fetch_all(&mut **c)
            .await)?;
        Ok(MaintenanceInputs::new(
            row.stored()?.value,
            row.git()?,
            row.updated_at,
            self.active_windows().await?,
            overrides
                .into_iter()
                .map(OverrideRow::parse)
                .collect::<Result<_, _>>()?,
        ))
    }

    /// [`Db::set_mode`] inside a locked transaction (a lockdown, a batch).
    pub(in crate::store) async fn set_mode(
        &mut self,
        mode: Mode,
        change: &ApiChange,
    ) -> Result<Override, StoreError> {
        let current = self.the_mode_row().await?.stored()?;
        let before = self.effective_mode(change.now).await?;
        // The mode is always held, whoever owns it: an emergency freeze must not be undone.
        let hold = always_hold(Some(&current), current.value.key(), change)?;
        let target = Maintenance {
            mode,
            reason: change.reason.clone().unwrap_or_default(),
        };
        // A new mode replaces the previous mode override instead of stacking on it.
        let sql = "UPDATE overrides SET cleared_at = $1, cleared_by = $2 \
                   WHERE cleared_at IS NULL AND resource_kind = 'maintenance_mode'";
        on!(self, |c| sqlx::query(sql)
            .bind(change.now)
            .bind(&change.actor)
            .execute(&mut **c)
            .await
            .map(drop))?;
        // Only the mode in force: git's mode stays what git declared.
        let sql = "UPDATE maintenance_state SET mode = $1, reason = $2, updated_at = $3";
        on!(self, |c| sqlx::query(sql)
            .bind(target.mode.as_str())
            .bind(&target.reason)
            .bind(change.now)
            .execute(&mut **c)
            .await
            .map(drop))?;
        let hold = self
            .api_record(Some(&current), Some(&target), Some(hold), change)
            .await?;
        let hold = hold.ok_or_else(|| StoreError::NotFound("the maintenance override".into()))?;
        // A lockdown's mode is told by the lockdown's one event.
        if before != mode && hold.group_id.is_none() {
            let id = format!("mode-changed:override:{}", hold.id);
            let reason = &target.reason;
            let told = Event::mode_changed(id, (before, mode), "override", &change.actor, reason, change.now);
            self.record_events(&[told]).await?;
        }
        Ok(hold)
    }

    /// The effective maintenance mode at `now`, as this transaction sees the store.
    pub(in crate::store) async fn effective_mode(&mut self, now: DateTime<Utc>) -> Result<Mode, StoreError> {
        Ok(crate::mode::effective(&self.maintenance().await?, now).mode)
    }

    /// Sets a feature flag for an HTTP caller, always as an override; an unknown flag is created
    /// (owned by the API).
    pub(in crate::store) async fn set_flag(
        &mut self,
        name: &FlagName,
        enabled: bool,
        change: &ApiChange,
    ) -> Result<Override, StoreError> {
        let sql = concat!("SELECT ", columns!(flags), " FROM feature_flags WHERE name = $1");
        let row = on!(self, |c| sqlx::query_as::<_, FlagRow>(sql)
            .bind(name.as_str())
            .fetch_optional(&mut **c)
            .await)?;
        let current = row.map(FlagRow::stored).transpose()?;
        let target = match &current {
            Some(c) => FeatureFlag {
                enabled,
                ..c.value.clone()
            },
            None => FeatureFlag {
                name: name.clone(),
                enabled,
                description: String::new(),
            },
        };
        let hold = always_hold(current.as_ref(), target.key(), change)?;
        let hold = self
            .api_write(current.as_ref(), Some(&target), Some(hold), change)
            .await?;
        hold.ok_or_else(|| StoreError::NotFound("the feature flag override".into()))
    }

    /// Sets the deployment profile for an HTTP caller, always as an override.
    pub(in crate::store) async fn set_profile(
        &mut self,
        name: &ProfileName,
        change: &ApiChange,
    ) -> Result<Override, StoreError> {
        let current = self.profile().await?;
        let target = Profile { name: name.clone() };
        let hold = always_hold(current.as_ref(), target.key(), change)?;
        let hold = self
            .api_write(current.as_ref(), Some(&target), Some(hold), change)
            .await?;
        hold.ok_or_else(|| StoreError::NotFound("the deployment profile override".into()))
    }
}
