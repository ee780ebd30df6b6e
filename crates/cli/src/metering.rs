//! `tollgatectl` commands for usage metering: the billable-metrics catalog (`metrics apply`
//! from a TOML file), ledger corrections (`ledger reverse`), period locks (`usage lock`),
//! and CSV import of usage events through the public batch API (`events import`).

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Context};
use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel_async::RunQueryDsl;
use serde::Deserialize;
use tollgate_domain::usage::{Aggregation, MetricDefinition};
use tollgate_storage::ledger::ReverseRefusal;
use tollgate_storage::{billable_metrics, ledger, AsyncPgConnection};
use uuid::Uuid;

/// A metrics file: `[[metric]]` tables (see `examples/metrics/`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsFile {
    #[serde(default)]
    pub metric: Vec<MetricEntry>,
}

/// One `[[metric]]` of a metrics file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricEntry {
    pub code: String,
    pub name: String,
    /// The unit raw units count in (`calls`, `bytes`, `tokens`…).
    pub unit: String,
    pub aggregation: Aggregation,
    #[serde(default)]
    pub field: Option<String>,
    #[serde(default)]
    pub weight_property: Option<String>,
    #[serde(default)]
    pub weights: BTreeMap<String, i64>,
    /// Weight of operations not listed in `weights` (default 1).
    #[serde(default)]
    pub default_weight: Option<i64>,
    /// Refuse events whose operation is not listed in `weights` (UNKNOWN_OPERATION).
    #[serde(default)]
    pub refuse_unknown_operations: bool,
}

impl MetricEntry {
    fn definition(&self) -> MetricDefinition {
        MetricDefinition {
            code: self.code.clone(),
            aggregation: self.aggregation,
            field: self.field.clone(),
            weight_property: self.weight_property.clone(),
            weights: self.weights.clone(),
            default_weight: if self.refuse_unknown_operations {
                None
            } else {
                Some(self.default_weight.unwrap_or(1))
            },
        }
    }
}

/// Reads and checks a metrics file. Errors: unreadable file, TOML errors, an invalid
/// definition (named), a code defined twice.
pub fn read_metrics_file(path: &Path) -> anyhow::Result<Vec<(MetricEntry, MetricDefinition)>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let file: MetricsFile =
        toml::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
    let mut seen = std::collections::HashSet::new();
    let mut out = Vec::with_capacity(file.metric.len());
    for entry in file.metric {
        if !seen.insert(entry.code.clone()) {
            bail!("metric `{}` is defined twice", entry.code);
        }
        let definition = entry.definition();
        definition.validate().map_err(anyhow::Error::msg)?;
        out.push((entry, definition));
    }
    Ok(out)
}

/// `metrics apply`: validates every definition first, then upserts them all in one
/// transaction (all or nothing).
pub async fn apply_metrics(
    conn: &mut AsyncPgConnection,
    tenant: Uuid,
    path: &Path,
) -> anyhow::Result<()> {
    use diesel_async::AsyncConnection;
    let metrics = read_metrics_file(path)?;
    let count = metrics.len();
    conn.transaction::<_, anyhow::Error, _>(async |conn| {
        for (entry, definition) in &metrics {
            billable_metrics::upsert(conn, tenant, definition, &entry.name, &entry.unit).await?;
        }
        Ok(())
    })
    .await?;
    println!("applied {count} metrics from {}", path.display());
    Ok(())
}

/// `metrics list`.
pub async fn list_metrics(conn: &mut AsyncPgConnection, tenant: Uuid) -> anyhow::Result<()> {
    let rows = billable_metrics::list(conn, tenant).await?;
    println!(
        "{:<28} {:<13} {:<12} {:<16} weights",
        "code", "aggregation", "unit", "field"
    );
    for row in rows {
        let weights = match &row.weight_property {
            Some(prop) => format!("by {prop}: {}", row.weights),
            None => String::new(),
        };
        println!(
            "{:<28} {:<13} {:<12} {:<16} {}",
            row.code,
            row.aggregation,
            row.unit,
            row.field.unwrap_or_default(),
            weights
        );
    }
    Ok(())
}

/// `ledger reverse`: appends the reversing entry of `entry_id`.
pub async fn reverse_entry(
    conn: &mut AsyncPgConnection,
    entry_id: i64,
    reason: &str,
) -> anyhow::Result<()> {
    if reason.trim().is_empty() {
        bail!("--reason must say why the entry is reversed");
    }
    match ledger::reverse(conn, None, entry_id, reason).await? {
        Ok(reversal) => println!(
            "reversed entry {entry_id} with entry {} ({} {} raw, {} weighted)",
            reversal.id, reversal.metric, reversal.raw_units, reversal.weighted_units
        ),
        Err(ReverseRefusal::NotFound) => bail!("no ledger entry {entry_id}"),
        Err(ReverseRefusal::IsReversal) => {
            bail!("entry {entry_id} is itself a reversal; write a new entry instead")
        }
        Err(ReverseRefusal::AlreadyReversed) => bail!("entry {entry_id} was already reversed"),
    }
    Ok(())
}

/// `usage lock`: usage stamped before `before` is refused from now on (PERIOD_FINALIZED).
/// The lock only moves forward.
pub async fn lock_usage(
    conn: &mut AsyncPgConnection,
    tenant: Uuid,
    before: DateTime<Utc>,
) -> anyhow::Result<()> {
    use tollgate_storage::schema::tenants as t;
    let updated = diesel::update(t::table.find(tenant))
        .filter(
            t::usage_locked_before
                .is_null()
                .or(t::usage_locked_before.lt(before)),
        )
        .set(t::usage_locked_before.eq(before))
        .execute(conn)
        .await?;
    if updated == 0 {
        println!("usage was already locked at or after {before}");
    } else {
        println!("usage before {before} is locked");
    }
    Ok(())
}

/// `tenant set-time-zone`.
pub async fn set_time_zone(
    conn: &mut AsyncPgConnection,
    tenant: Uuid,
    zone: &str,
) -> anyhow::Result<()> {
    use tollgate_storage::schema::tenants as t;
    if zone != "UTC" && !tollgate_storage::usage::is_time_zone(conn, zone).await? {
        bail!("unknown time zone `{zone}` (use an IANA name such as Europe/Paris)");
    }
    diesel::update(t::table.find(tenant))
        .set(t::time_zone.eq(zone))
        .execute(conn)
        .await?;
    println!("time zone set to {zone}");
    Ok(())
}

/// The totals of an import.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ImportSummary {
    pub rows: usize,
    pub accepted: usize,
    pub duplicates: usize,
    pub rejected: usize,
}

/// Columns with a meaning of their own; every other column becomes a property.
const KNOWN_COLUMNS: [&str; 6] = [
    "id",
    "metric",
    "workspace",
    "account",
    "timestamp",
    "properties",
];

/// One CSV record as an event. `properties` (a JSON object) and the extra columns merge;
/// an extra column's integer-looking value becomes a JSON number. Empty cells are absent.
fn record_to_event(
    headers: &csv::StringRecord,
    record: &csv::StringRecord,
) -> Result<serde_json::Value, String> {
    let mut event = serde_json::Map::new();
    let mut properties = serde_json::Map::new();
    for (name, value) in headers.iter().zip(record.iter()) {
        if value.is_empty() {
            continue;
        }
        match name {
            "properties" => {
                let parsed: serde_json::Map<String, serde_json::Value> =
                    serde_json::from_str(value)
                        .map_err(|e| format!("`properties` is not a JSON object: {e}"))?;
                properties.extend(parsed);
            }
            known if KNOWN_COLUMNS.contains(&known) => {
                event.insert(
                    known.to_owned(),
                    serde_json::Value::String(value.to_owned()),
                );
            }
            other => {
                let v = value
                    .parse::<i64>()
                    .map(serde_json::Value::from)
                    .unwrap_or_else(|_| serde_json::Value::String(value.to_owned()));
                properties.insert(other.to_owned(), v);
            }
        }
    }
    if !properties.is_empty() {
        event.insert("properties".into(), serde_json::Value::Object(properties));
    }
    Ok(serde_json::Value::Object(event))
}

/// `events import`: reads the CSV, sends it in batches to `POST /v1/events/batch` through the
/// gateway (the same validation and dedupe as any client; re-running an import counts
/// nothing twice), shows a progress bar, and prints a summary with every rejected line.
/// A batch answered 429/5xx or not at all is retried with backoff (it is idempotent).
pub async fn import_events(
    path: &Path,
    gateway_url: &str,
    api_key: &str,
    batch_size: usize,
) -> anyhow::Result<ImportSummary> {
    if !(1..=1000).contains(&batch_size) {
        bail!("--batch-size must be 1-1000");
    }
    let total_bytes = std::fs::metadata(path)
        .with_context(|| format!("reading {}", path.display()))?
        .len();
    let mut reader =
        csv::Reader::from_path(path).with_context(|| format!("opening {}", path.display()))?;
    let headers = reader.headers()?.clone();
    for required in ["id", "metric"] {
        if !headers.iter().any(|h| h == required) {
            bail!("the CSV header has no `{required}` column");
        }
    }
    let bar = indicatif::ProgressBar::new(total_bytes).with_style(
        indicatif::ProgressStyle::with_template("{bar:40} {bytes}/{total_bytes} {msg}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()?;
    let url = format!("{}/v1/events/batch", gateway_url.trim_end_matches('/'));
    let mut summary = ImportSummary::default();
    let mut rejected_lines: Vec<String> = Vec::new();
    let mut batch: Vec<serde_json::Value> = Vec::with_capacity(batch_size);
    let mut lines: Vec<u64> = Vec::with_capacity(batch_size);
    let mut records = reader.records();
    loop {
        let next = records.next();
        let done = next.is_none();
        if let Some(record) = next {
            let record = record?;
            let line = record.position().map(|p| p.line()).unwrap_or(0);
            summary.rows += 1;
            match record_to_event(&headers, &record) {
                Ok(event) => {
                    batch.push(event);
                    lines.push(line);
                }
                Err(message) => {
                    summary.rejected += 1;
                    rejected_lines.push(format!("line {line}: INVALID_EVENT: {message}"));
                }
            }
            if let Some(p) = record.position() {
                bar.set_position(p.byte());
            }
        }
        if batch.len() == batch_size || (done && !batch.is_empty()) {
            let answer = send_batch(&client, &url, api_key, &batch).await?;
            summary.accepted += answer.accepted;
            summary.duplicates += answer.duplicates;
            summary.rejected += answer.rejected;
            for result in answer.results {
                if let Some(error) = result.error {
                    let line = lines.get(result.index).copied().unwrap_or(0);
                    rejected_lines.push(format!("line {line}: {}: {}", error.code, error.message));
                }
            }
            bar.set_message(format!(
                "{} accepted, {} duplicates, {} rejected",
                summary.accepted, summary.duplicates, summary.rejected
            ));
            batch.clear();
            lines.clear();
        }
        if done {
            break;
        }
    }
    bar.finish_and_clear();
    println!(
        "imported {}: {} rows, {} accepted, {} duplicates, {} rejected",
        path.display(),
        summary.rows,
        summary.accepted,
        summary.duplicates,
        summary.rejected
    );
    for line in rejected_lines.iter().take(50) {
        println!("  {line}");
    }
    if rejected_lines.len() > 50 {
        println!("  … and {} more rejected rows", rejected_lines.len() - 50);
    }
    Ok(summary)
}

#[derive(Deserialize)]
struct BatchAnswer {
    accepted: usize,
    duplicates: usize,
    rejected: usize,
    results: Vec<BatchResult>,
}

#[derive(Deserialize)]
struct BatchResult {
    index: usize,
    #[serde(default)]
    error: Option<tollgate_domain::usage::EventRejection>,
}

async fn send_batch(
    client: &reqwest::Client,
    url: &str,
    api_key: &str,
    events: &[serde_json::Value],
) -> anyhow::Result<BatchAnswer> {
    let body = serde_json::json!({ "events": events });
    let mut delay = Duration::from_millis(200);
    for attempt in 1..=8 {
        let sent = client
            .post(url)
            .bearer_auth(api_key)
            .json(&body)
            .send()
            .await;
        match sent {
            Ok(response) if response.status().is_success() => {
                return response.json().await.context("reading the batch answer");
            }
            Ok(response)
                if response.status().is_server_error() || response.status().as_u16() == 429 =>
            {
                tracing_like_warn(attempt, &format!("HTTP {}", response.status()));
            }
            Ok(response) => {
                let status = response.status();
                let text = response.text().await.unwrap_or_default();
                bail!("the batch was refused: HTTP {status}: {text}");
            }
            Err(err) => tracing_like_warn(attempt, &err.to_string()),
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_secs(10));
    }
    bail!("the gateway did not take a batch after 8 attempts; re-run the import (it is idempotent)")
}

fn tracing_like_warn(attempt: u32, what: &str) {
    eprintln!("batch attempt {attempt} failed ({what}); retrying");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extra_columns_become_properties() {
        let headers = csv::StringRecord::from(vec!["id", "metric", "workspace", "tokens", "model"]);
        let record = csv::StringRecord::from(vec!["e1", "tokens", "ws", "42", "gpt"]);
        let event = record_to_event(&headers, &record).unwrap();
        assert_eq!(
            event,
            serde_json::json!({"id": "e1", "metric": "tokens", "workspace": "ws",
                               "properties": {"tokens": 42, "model": "gpt"}})
        );
    }

    #[test]
    fn bad_properties_are_reported() {
        let headers = csv::StringRecord::from(vec!["id", "metric", "properties"]);
        let record = csv::StringRecord::from(vec!["e1", "m", "{nope"]);
        assert!(record_to_event(&headers, &record).is_err());
    }

    #[test]
    fn the_shipped_project_tool_catalog_is_valid() {
        let path =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/metrics/project-tool.toml");
        let metrics = read_metrics_file(&path).unwrap();
        let ops = metrics
            .iter()
            .find(|(_, d)| d.code == "api_operations")
            .unwrap();
        assert!(ops.1.weights.len() >= 50, "the seed meters 50+ operations");
        assert_eq!(ops.1.weights["ai_completion"], 10);
    }

    #[test]
    fn metric_files_are_checked() {
        let dir = std::env::temp_dir().join(format!("tg-metrics-{}", Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("m.toml");
        std::fs::write(
            &path,
            "[[metric]]\ncode = \"ops\"\nname = \"Ops\"\nunit = \"ops\"\naggregation = \"count\"\n\
             weight_property = \"operation\"\nrefuse_unknown_operations = true\n\
             [metric.weights]\ntask_create = 1\nai_completion = 10\n",
        )
        .unwrap();
        let parsed = read_metrics_file(&path).unwrap();
        assert_eq!(parsed[0].1.default_weight, None);
        assert_eq!(parsed[0].1.weights["ai_completion"], 10);
        std::fs::write(
            &path,
            "[[metric]]\ncode = \"s\"\nname = \"S\"\nunit = \"u\"\naggregation = \"sum\"\n",
        )
        .unwrap();
        assert!(read_metrics_file(&path).is_err(), "sum needs a field");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
