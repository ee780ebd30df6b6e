//! The billable-metrics catalog (`billable_metrics`): written by `tollgatectl metrics apply`,
//! read by intake (through [`crate::catalog::MetricCatalog`]) and by the usage API.

use chrono::Utc;
use diesel::prelude::*;
use diesel::upsert::excluded;
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use tollgate_domain::usage::MetricDefinition;
use uuid::Uuid;

use crate::models::BillableMetricRow;
use crate::schema::billable_metrics;
use crate::StorageError;

/// Inserts or replaces a metric definition (by tenant and code). Returns the stored row.
pub async fn upsert(
    conn: &mut AsyncPgConnection,
    tenant_id: Uuid,
    definition: &MetricDefinition,
    name: &str,
    unit: &str,
) -> Result<BillableMetricRow, StorageError> {
    let now = Utc::now();
    let row = BillableMetricRow {
        tenant_id,
        code: definition.code.clone(),
        name: name.to_owned(),
        unit: unit.to_owned(),
        aggregation: definition.aggregation.as_str().to_owned(),
        field: definition.field.clone(),
        weight_property: definition.weight_property.clone(),
        weights: serde_json::to_value(&definition.weights).unwrap_or_default(),
        default_weight: definition.default_weight,
        created_at: now,
        updated_at: now,
    };
    Ok(diesel::insert_into(billable_metrics::table)
        .values(&row)
        .on_conflict((billable_metrics::tenant_id, billable_metrics::code))
        .do_update()
        .set((
            billable_metrics::name.eq(excluded(billable_metrics::name)),
            billable_metrics::unit.eq(excluded(billable_metrics::unit)),
            billable_metrics::aggregation.eq(excluded(billable_metrics::aggregation)),
            billable_metrics::field.eq(excluded(billable_metrics::field)),
            billable_metrics::weight_property.eq(excluded(billable_metrics::weight_property)),
            billable_metrics::weights.eq(excluded(billable_metrics::weights)),
            billable_metrics::default_weight.eq(excluded(billable_metrics::default_weight)),
            billable_metrics::updated_at.eq(now),
        ))
        .returning(BillableMetricRow::as_returning())
        .get_result(conn)
        .await?)
}

/// The tenant's metric `code`.
pub async fn find(
    conn: &mut AsyncPgConnection,
    tenant_id: Uuid,
    code: &str,
) -> Result<Option<BillableMetricRow>, StorageError> {
    Ok(billable_metrics::table
        .filter(billable_metrics::tenant_id.eq(tenant_id))
        .filter(billable_metrics::code.eq(code))
        .select(BillableMetricRow::as_select())
        .first(conn)
        .await
        .optional()?)
}

/// Every metric of the tenant, by code.
pub async fn list(
    conn: &mut AsyncPgConnection,
    tenant_id: Uuid,
) -> Result<Vec<BillableMetricRow>, StorageError> {
    Ok(billable_metrics::table
        .filter(billable_metrics::tenant_id.eq(tenant_id))
        .order(billable_metrics::code.asc())
        .select(BillableMetricRow::as_select())
        .load(conn)
        .await?)
}

impl BillableMetricRow {
    /// The definition as the domain measures events with. Errors: a stored row that no longer
    /// parses (the CHECK constraints make this a corrupted catalog).
    pub fn definition(&self) -> Result<MetricDefinition, StorageError> {
        let corrupt = |what: String| {
            StorageError::Unavailable(format!("metric `{}` is corrupt: {what}", self.code))
        };
        Ok(MetricDefinition {
            code: self.code.clone(),
            aggregation: self.aggregation.parse().map_err(corrupt)?,
            field: self.field.clone(),
            weight_property: self.weight_property.clone(),
            weights: serde_json::from_value(self.weights.clone())
                .map_err(|e| corrupt(e.to_string()))?,
            default_weight: self.default_weight,
        })
    }
}
