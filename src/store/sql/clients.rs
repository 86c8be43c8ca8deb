//! API clients as the API reads and writes them, and the active ones a replica authenticates.

use crate::event::Event;
use crate::model::Client;
use crate::store::backend::{Tx, on};
use crate::store::rows::{ClientRecordRow, columns};
use crate::store::sql::overrides::hold_for;
use crate::store::{ApiChange, ClientFilter, ClientRecord, Db, StoreError};

/// Which client [`Tx::client_by`] reads.
enum Which<'a> {
    Id(i64),
    Name(&'a str),
}

impl Db {
    /// Clients matching a filter, by name; never key material beyond the display prefix.
    pub async fn clients(&self, filter: &ClientFilter) -> Result<Vec<ClientRecord>, StoreError> {
        let sql = concat!(
            "SELECT ",
            columns!(client_records),
            " FROM api_clients WHERE ($1 IS NULL OR active = $1) AND ($2 IS NULL OR client_type = $2) \
             ORDER BY name LIMIT $3 OFFSET $4"
        );
        let mut conn = self.conn().await?;
        let rows = on!(&mut conn, |c| sqlx::query_as::<_, ClientRecordRow>(sql)
            .bind(filter.active)
            .bind(filter.client_type.map(|t| t.as_str()))
            .bind(filter.page.limit)
            .bind(filter.page.offset)
            .fetch_all(&mut **c)
            .await)?;
        rows.into_iter().map(ClientRecordRow::record).collect()
    }

    /// One client by id, as the API shows it.
    pub async fn client(&self, id: i64) -> Result<Option<ClientRecord>, StoreError> {
        let mut tx = self.begin_read().await?;
        let row = tx.client_by(Which::Id(id)).await?;
        tx.commit().await?;
        row.map(ClientRecordRow::record).transpose()
    }

    /// Registers a client owned by the API; [`StoreError::Conflict`] when the name is taken.
    pub async fn register_client(
        &self,
        client: &Client,
        key_prefix: &str,
        change: &ApiChange,
    ) -> Result<ClientRecord, StoreError> {
        let name = client.name.as_str();
        let mut tx = self.begin_apply().await?;
        if tx.client_by(Which::Name(name)).await?.is_some() {
            return Err(StoreError::Conflict(format!(
                "a client named {name} already exists"
            )));
        }
        tx.api_write::<Client>(None, Some(client), None, change).await?;
        let sql = "UPDATE api_clients SET key_prefix = $1 WHERE name = $2";
        on!(&mut tx, |c| sqlx::query(sql)
            .bind(key_prefix)
            .bind(name)
            .execute(&mut **c)
            .await
            .map(drop))?;
        let row = tx.client_by(Which::Name(name)).await?;
        let record = row
            .ok_or_else(|| StoreError::NotFound(format!("client {name}")))?
            .record()?;
        self.commit(tx).await?;
        Ok(record)
    }

    /// Activates or deactivates a client; a git-owned one gets an override (it needs a reason).
    pub async fn set_client_active(
        &self,
        id: i64,
        active: bool,
        change: &ApiChange,
    ) -> Result<ClientRecord, StoreError> {
        let missing = || StoreError::NotFound(format!("client {id}"));
        let mut tx = self.begin_apply().await?;
        let current = tx.client_by(Which::Id(id)).await?.ok_or_else(missing)?.stored()?;
        let target = Client {
            active,
            ..current.value.clone()
        };
        let hold = hold_for(Some(&current), change)?;
        tx.api_write(Some(&current), Some(&target), hold, change).await?;
        if current.value.active && !active {
            let reason = change.reason.as_deref().unwrap_or_default();
            let name = current.value.name.as_str();
            let at = change.now.timestamp_micros().to_string();
            let told = Event::client_deactivated(id, name, (&change.actor, reason), &at, change.now);
            tx.record_events(&[told]).await?;
        }
        let record = tx.client_by(Which::Id(id)).await?.ok_or_else(missing)?.record()?;
        self.commit(tx).await?;
        Ok(record)
    }
}

impl Tx<'_> {
    /// One client's row.
    async fn client_by(&mut self, which: Which<'_>) -> Result<Option<ClientRecordRow>, StoreError> {
        let (id, name) = match which {
            Which::Id(id) => (Some(id), None),
            Which::Name(name) => (None, Some(name)),
        };
        let sql = concat!(
            "SELECT ",
            columns!(client_records),
            " FROM api_clients WHERE id = $1 OR name = $2"
        );
        Ok(on!(self, |c| sqlx::query_as::<_, ClientRecordRow>(sql)
            .bind(id)
            .bind(name)
            .fetch_optional(&mut **c)
            .await)?)
    }
}
