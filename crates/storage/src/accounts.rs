//! Billing entities: accounts (personal or organization) and the workspaces they own, with
//! the ownership history that attributes usage to the owner in force at its timestamp
//! (SPEC "Usage metering and the ledger", "Security": account rules).
//!
//! Rules enforced here, under row locks, whatever the client:
//! * a personal account owns at most one workspace;
//! * conversion of a personal account to an organization is one transaction: the
//!   organization is created, every workspace moves to it, the personal account records the
//!   instant (`converted_at`), and the ownership history closes at that instant.

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use uuid::Uuid;

use crate::models::{AccountRow, WorkspaceOwnerRow, WorkspaceRow};
use crate::schema::{accounts, workspace_owners, workspaces};
use crate::StorageError;

/// Why an account-rule write was refused (the API maps each to a status and code).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// No such account for this tenant.
    AccountNotFound,
    /// A personal account already owns its one workspace.
    PersonalWorkspaceLimit,
    /// The personal account was converted; its workspaces belong to the organization now.
    AccountConverted,
    /// Only a personal account can be converted.
    NotPersonal,
    /// The external id is taken by another account or workspace of the tenant.
    ExternalIdTaken,
}

/// Creates an account. Refused with [`Refusal::ExternalIdTaken`] when the tenant already has
/// an account with this external id.
pub async fn create_account(
    conn: &mut AsyncPgConnection,
    tenant_id: Uuid,
    kind: &str,
    external_id: &str,
    name: &str,
) -> Result<Result<AccountRow, Refusal>, StorageError> {
    let row = AccountRow {
        id: Uuid::now_v7(),
        tenant_id,
        kind: kind.to_owned(),
        external_id: external_id.to_owned(),
        name: name.to_owned(),
        converted_to: None,
        converted_at: None,
        created_at: Utc::now(),
    };
    let inserted = diesel::insert_into(accounts::table)
        .values(&row)
        .on_conflict_do_nothing()
        .execute(conn)
        .await?;
    Ok(if inserted == 1 {
        Ok(row)
    } else {
        Err(Refusal::ExternalIdTaken)
    })
}

/// The tenant's account with this external id.
pub async fn find_account(
    conn: &mut AsyncPgConnection,
    tenant_id: Uuid,
    external_id: &str,
) -> Result<Option<AccountRow>, StorageError> {
    Ok(accounts::table
        .filter(accounts::tenant_id.eq(tenant_id))
        .filter(accounts::external_id.eq(external_id))
        .select(AccountRow::as_select())
        .first(conn)
        .await
        .optional()?)
}

/// Accounts by id (any of `ids` that belong to the tenant).
pub async fn accounts_by_id(
    conn: &mut AsyncPgConnection,
    tenant_id: Uuid,
    ids: &[Uuid],
) -> Result<Vec<AccountRow>, StorageError> {
    Ok(accounts::table
        .filter(accounts::tenant_id.eq(tenant_id))
        .filter(accounts::id.eq_any(ids))
        .select(AccountRow::as_select())
        .load(conn)
        .await?)
}

/// The tenant's workspace with this external id.
pub async fn find_workspace(
    conn: &mut AsyncPgConnection,
    tenant_id: Uuid,
    external_id: &str,
) -> Result<Option<WorkspaceRow>, StorageError> {
    Ok(workspaces::table
        .filter(workspaces::tenant_id.eq(tenant_id))
        .filter(workspaces::external_id.eq(external_id))
        .select(WorkspaceRow::as_select())
        .first(conn)
        .await
        .optional()?)
}

/// Workspaces by id (any of `ids` that belong to the tenant).
pub async fn workspaces_by_id(
    conn: &mut AsyncPgConnection,
    tenant_id: Uuid,
    ids: &[Uuid],
) -> Result<Vec<WorkspaceRow>, StorageError> {
    Ok(workspaces::table
        .filter(workspaces::tenant_id.eq(tenant_id))
        .filter(workspaces::id.eq_any(ids))
        .select(WorkspaceRow::as_select())
        .load(conn)
        .await?)
}

/// The workspaces an account owns now, oldest first.
pub async fn workspaces_of(
    conn: &mut AsyncPgConnection,
    account_id: Uuid,
) -> Result<Vec<WorkspaceRow>, StorageError> {
    Ok(workspaces::table
        .filter(workspaces::account_id.eq(account_id))
        .order(workspaces::id.asc())
        .select(WorkspaceRow::as_select())
        .load(conn)
        .await?)
}

/// A workspace's ownership history, oldest first.
pub async fn ownership(
    conn: &mut AsyncPgConnection,
    workspace_ids: &[Uuid],
) -> Result<Vec<WorkspaceOwnerRow>, StorageError> {
    Ok(workspace_owners::table
        .filter(workspace_owners::workspace_id.eq_any(workspace_ids))
        .order((
            workspace_owners::workspace_id,
            workspace_owners::valid_from.asc(),
        ))
        .select(WorkspaceOwnerRow::as_select())
        .load(conn)
        .await?)
}

/// The owner in force at `at`, given one workspace's history sorted oldest first. Usage
/// stamped before the workspace existed goes to its first owner.
pub fn owner_at(history: &[WorkspaceOwnerRow], at: DateTime<Utc>) -> Option<Uuid> {
    history
        .iter()
        .find(|span| span.covers(at))
        .or_else(|| history.first().filter(|first| at < first.valid_from))
        .map(|span| span.account_id)
}

/// The billing entity for account-level usage at `at`: a converted personal account's
/// usage at or after its conversion belongs to the organization.
pub fn entity_at(account: &AccountRow, at: DateTime<Utc>) -> Uuid {
    match (account.converted_to, account.converted_at) {
        (Some(org), Some(when)) if at >= when => org,
        _ => account.id,
    }
}

/// Creates a workspace owned by the account `account_external_id`, under a lock on the
/// account row so that two concurrent requests cannot give a personal account two
/// workspaces. Refusals: [`Refusal::AccountNotFound`], [`Refusal::PersonalWorkspaceLimit`],
/// [`Refusal::AccountConverted`], [`Refusal::ExternalIdTaken`].
pub async fn create_workspace(
    conn: &mut AsyncPgConnection,
    tenant_id: Uuid,
    account_external_id: &str,
    external_id: &str,
    name: &str,
) -> Result<Result<WorkspaceRow, Refusal>, StorageError> {
    let (account_external_id, external_id, name) = (
        account_external_id.to_owned(),
        external_id.to_owned(),
        name.to_owned(),
    );
    conn.transaction::<_, StorageError, _>(async move |conn| {
        let account: Option<AccountRow> = accounts::table
            .filter(accounts::tenant_id.eq(tenant_id))
            .filter(accounts::external_id.eq(&account_external_id))
            .select(AccountRow::as_select())
            .for_update()
            .first(conn)
            .await
            .optional()?;
        let Some(account) = account else {
            return Ok(Err(Refusal::AccountNotFound));
        };
        if account.converted_to.is_some() {
            return Ok(Err(Refusal::AccountConverted));
        }
        if account.kind == "personal" {
            let owned: i64 = workspaces::table
                .filter(workspaces::account_id.eq(account.id))
                .count()
                .get_result(conn)
                .await?;
            if owned >= 1 {
                return Ok(Err(Refusal::PersonalWorkspaceLimit));
            }
        }
        let now = Utc::now();
        let row = WorkspaceRow {
            id: Uuid::now_v7(),
            tenant_id,
            account_id: account.id,
            external_id,
            name,
            created_at: now,
        };
        let inserted = diesel::insert_into(workspaces::table)
            .values(&row)
            .on_conflict_do_nothing()
            .execute(conn)
            .await?;
        if inserted == 0 {
            return Ok(Err(Refusal::ExternalIdTaken));
        }
        diesel::insert_into(workspace_owners::table)
            .values(&WorkspaceOwnerRow {
                workspace_id: row.id,
                account_id: account.id,
                valid_from: now,
                valid_to: None,
            })
            .execute(conn)
            .await?;
        Ok(Ok(row))
    })
    .await
}

/// The result of a conversion.
#[derive(Debug, Clone)]
pub struct Conversion {
    pub personal: AccountRow,
    pub organization: AccountRow,
    /// The workspaces that moved to the organization.
    pub workspaces: Vec<WorkspaceRow>,
}

/// Converts the personal account `personal_external_id` into a new organization account,
/// all or nothing. The instant of conversion is the database clock after the account and
/// its workspaces are locked, so usage being written for those workspaces (which holds a
/// share lock on them) lands wholly before it. Refusals: [`Refusal::AccountNotFound`],
/// [`Refusal::NotPersonal`], [`Refusal::AccountConverted`] (already converted),
/// [`Refusal::ExternalIdTaken`] (the organization's external id).
pub async fn convert_to_organization(
    conn: &mut AsyncPgConnection,
    tenant_id: Uuid,
    personal_external_id: &str,
    org_external_id: &str,
    org_name: &str,
) -> Result<Result<Conversion, Refusal>, StorageError> {
    let (personal_external_id, org_external_id, org_name) = (
        personal_external_id.to_owned(),
        org_external_id.to_owned(),
        org_name.to_owned(),
    );
    conn.transaction::<_, StorageError, _>(async move |conn| {
        let personal: Option<AccountRow> = accounts::table
            .filter(accounts::tenant_id.eq(tenant_id))
            .filter(accounts::external_id.eq(&personal_external_id))
            .select(AccountRow::as_select())
            .for_update()
            .first(conn)
            .await
            .optional()?;
        let Some(personal) = personal else {
            return Ok(Err(Refusal::AccountNotFound));
        };
        if personal.kind != "personal" {
            return Ok(Err(Refusal::NotPersonal));
        }
        if personal.converted_to.is_some() {
            return Ok(Err(Refusal::AccountConverted));
        }
        let owned: Vec<WorkspaceRow> = workspaces::table
            .filter(workspaces::account_id.eq(personal.id))
            .select(WorkspaceRow::as_select())
            .for_update()
            .load(conn)
            .await?;
        let at: DateTime<Utc> = diesel::select(diesel::dsl::sql::<diesel::sql_types::Timestamptz>(
            "clock_timestamp()",
        ))
        .get_result(conn)
        .await?;
        let organization = AccountRow {
            id: Uuid::now_v7(),
            tenant_id,
            kind: "organization".to_owned(),
            external_id: org_external_id,
            name: org_name,
            converted_to: None,
            converted_at: None,
            created_at: at,
        };
        let inserted = diesel::insert_into(accounts::table)
            .values(&organization)
            .on_conflict_do_nothing()
            .execute(conn)
            .await?;
        if inserted == 0 {
            return Ok(Err(Refusal::ExternalIdTaken));
        }
        let personal: AccountRow = diesel::update(accounts::table.find(personal.id))
            .set((
                accounts::converted_to.eq(organization.id),
                accounts::converted_at.eq(at),
            ))
            .returning(AccountRow::as_returning())
            .get_result(conn)
            .await?;
        let ids: Vec<Uuid> = owned.iter().map(|w| w.id).collect();
        let moved: Vec<WorkspaceRow> = diesel::update(workspaces::table)
            .filter(workspaces::id.eq_any(&ids))
            .set(workspaces::account_id.eq(organization.id))
            .returning(WorkspaceRow::as_returning())
            .get_results(conn)
            .await?;
        diesel::update(workspace_owners::table)
            .filter(workspace_owners::workspace_id.eq_any(&ids))
            .filter(workspace_owners::valid_to.is_null())
            .set(workspace_owners::valid_to.eq(at))
            .execute(conn)
            .await?;
        let spans: Vec<WorkspaceOwnerRow> = ids
            .iter()
            .map(|id| WorkspaceOwnerRow {
                workspace_id: *id,
                account_id: organization.id,
                valid_from: at,
                valid_to: None,
            })
            .collect();
        diesel::insert_into(workspace_owners::table)
            .values(&spans)
            .execute(conn)
            .await?;
        Ok(Ok(Conversion {
            personal,
            organization,
            workspaces: moved,
        }))
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Duration;

    #[test]
    fn owner_follows_the_history() {
        let t0 = Utc::now();
        let (personal, org) = (Uuid::now_v7(), Uuid::now_v7());
        let ws = Uuid::now_v7();
        let history = vec![
            WorkspaceOwnerRow {
                workspace_id: ws,
                account_id: personal,
                valid_from: t0,
                valid_to: Some(t0 + Duration::hours(1)),
            },
            WorkspaceOwnerRow {
                workspace_id: ws,
                account_id: org,
                valid_from: t0 + Duration::hours(1),
                valid_to: None,
            },
        ];
        assert_eq!(owner_at(&history, t0 - Duration::days(1)), Some(personal));
        assert_eq!(
            owner_at(&history, t0 + Duration::minutes(59)),
            Some(personal)
        );
        assert_eq!(owner_at(&history, t0 + Duration::hours(1)), Some(org));
        assert_eq!(owner_at(&history, t0 + Duration::days(9)), Some(org));
        assert_eq!(owner_at(&[], t0), None);
    }
}
