//! Artifacts end to end (SPEC "Jobs" → Results, "Usage metering and the ledger"): uploads and
//! deletes through the gateway, the `storage.bytes` ledger entries they leave (+size on write,
//! −size on delete, netting to the bytes still stored), and signed download links served
//! through the gateway without an API key.

use serde_json::Value;
use tollgate_e2e::{Options, TestApp};

/// The base URL job-intake's signed links point at by default (`artifacts.public_base_url`).
const PUBLIC_BASE: &str = "http://127.0.0.1:8080";
const STORAGE_SUM: &str = "SELECT coalesce(sum(raw_units), 0)::bigint AS n FROM ledger_entries WHERE metric = 'storage.bytes'";
const STORAGE_ENTRIES: &str =
    "SELECT count(*) AS n FROM ledger_entries WHERE metric = 'storage.bytes'";

async fn spawn() -> TestApp {
    TestApp::spawn_with(Options {
        worker: false,
        ..Options::default()
    })
    .await
}

/// `PUT /v1/artifacts/{key}` through the gateway; returns status and JSON body.
async fn put(
    app: &TestApp,
    key: &str,
    body: &[u8],
    content_type: &str,
    workspace: Option<&str>,
) -> (u16, Value) {
    let mut url = format!("{}/v1/artifacts/{key}", app.gateway_url);
    if let Some(ws) = workspace {
        url.push_str(&format!("?workspace={ws}"));
    }
    let res = app
        .http
        .put(url)
        .bearer_auth(&app.api_key)
        .header("content-type", content_type)
        .body(body.to_vec())
        .send()
        .await
        .expect("PUT artifact");
    let status = res.status().as_u16();
    (status, res.json().await.unwrap_or(Value::Null))
}

/// `DELETE /v1/artifacts/{key}` through the gateway; returns status and body (Null on 204).
async fn delete(app: &TestApp, key: &str) -> (u16, Value) {
    let res = app
        .http
        .delete(format!("{}/v1/artifacts/{key}", app.gateway_url))
        .bearer_auth(&app.api_key)
        .send()
        .await
        .expect("DELETE artifact");
    let status = res.status().as_u16();
    (status, res.json().await.unwrap_or(Value::Null))
}

/// The signed link re-pointed at this test's gateway: job-intake signs links for its configured
/// public base URL, and the test gateway listens on a random port.
fn via_gateway(app: &TestApp, download_url: &str) -> String {
    assert!(
        download_url.starts_with(&format!("{PUBLIC_BASE}/v1/downloads/art_")),
        "{download_url}"
    );
    format!(
        "{}{}",
        app.gateway_url,
        download_url.trim_start_matches(PUBLIC_BASE)
    )
}

/// Files under the test's artifact directory.
fn stored_files(app: &TestApp) -> usize {
    fn walk(dir: &std::path::Path) -> usize {
        std::fs::read_dir(dir)
            .map(|entries| {
                entries
                    .flatten()
                    .map(|e| {
                        let path = e.path();
                        if path.is_dir() {
                            walk(&path)
                        } else {
                            1
                        }
                    })
                    .sum()
            })
            .unwrap_or(0)
    }
    walk(&app.artifacts_dir)
}

fn str_of<'a>(v: &'a Value, field: &str) -> &'a str {
    v[field]
        .as_str()
        .unwrap_or_else(|| panic!("{field} in {v}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upload_then_delete_nets_to_zero_bytes() {
    let app = spawn().await;
    let key = "reports/2026/summary.txt";
    let body = b"hello, artifacts";

    let (status, created) = put(&app, key, body, "text/plain", None).await;
    assert_eq!(status, 201, "{created}");
    assert_eq!(created["key"], key);
    assert_eq!(created["size_bytes"], 16);
    assert_eq!(created["content_type"], "text/plain");
    assert_eq!(
        created["sha256"],
        "332d2398f1e603bc68e783600e0108c6b433c0264ed3d21e0b20e812c9bef3fd"
    );
    let id = str_of(&created, "id").to_owned();
    assert!(id.starts_with("art_"), "{id}");
    assert!(created["created_at"].is_string());
    assert!(created["download_expires_at"].is_string());
    let link = via_gateway(&app, str_of(&created, "download_url"));
    assert_eq!(stored_files(&app), 1);
    assert_eq!(app.count(STORAGE_SUM).await, 16);
    assert_eq!(
        app.count(&format!(
            "SELECT count(*) AS n FROM ledger_entries WHERE metric = 'storage.bytes' AND raw_units = 16 AND weighted_units = 16 AND cost = 0 AND source_kind = 'storage' AND source_id = '{id}' AND idempotency_key = 'artifact:{id}:put'"
        ))
        .await,
        1
    );

    let (status, body) = delete(&app, key).await;
    assert_eq!(status, 204, "{body}");

    // +16 then −16: the stored bytes net to zero.
    assert_eq!(app.count(STORAGE_ENTRIES).await, 2);
    assert_eq!(app.count(STORAGE_SUM).await, 0);
    assert_eq!(
        app.count(&format!(
            "SELECT count(*) AS n FROM ledger_entries WHERE metric = 'storage.bytes' AND raw_units = -16 AND weighted_units = -16 AND source_id = '{id}' AND idempotency_key = 'artifact:{id}:delete'"
        ))
        .await,
        1
    );
    assert_eq!(
        app.count("SELECT count(*) AS n FROM artifacts WHERE deleted_at IS NOT NULL")
            .await,
        1
    );
    assert_eq!(
        stored_files(&app),
        0,
        "the object is removed after the commit"
    );

    // Gone for the API, for a second delete, and for the link issued before.
    let (status, body) = app
        .get(
            &format!("{}/v1/artifacts/{key}", app.gateway_url),
            Some(&app.api_key),
        )
        .await;
    assert_eq!(status, 404);
    assert_eq!(body["error"]["code"], "ARTIFACT_NOT_FOUND");
    let (status, body) = delete(&app, key).await;
    assert_eq!(status, 404);
    assert_eq!(body["error"]["code"], "ARTIFACT_NOT_FOUND");
    let (status, body) = app.get(&link, None).await;
    assert_eq!(status, 404, "a deleted artifact's link: {body}");
    assert_eq!(body["error"]["code"], "ARTIFACT_NOT_FOUND");
    assert_eq!(app.count(STORAGE_ENTRIES).await, 2, "nothing more metered");

    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overwrite_leaves_one_live_version_metered_at_the_new_size() {
    let app = spawn().await;
    let key = "out/result.json";

    let (status, first) = put(&app, key, &[b'a'; 10], "application/json", None).await;
    assert_eq!(status, 201, "{first}");
    let old_link = via_gateway(&app, str_of(&first, "download_url"));
    let (status, second) = put(&app, key, &[b'b'; 25], "application/json", None).await;
    assert_eq!(status, 201, "{second}");
    assert_ne!(first["id"], second["id"], "each version has its own id");

    assert_eq!(
        app.count("SELECT count(*) AS n FROM artifacts WHERE deleted_at IS NULL")
            .await,
        1
    );
    assert_eq!(app.count("SELECT count(*) AS n FROM artifacts").await, 2);
    // +10, −10, +25.
    assert_eq!(app.count(STORAGE_ENTRIES).await, 3);
    assert_eq!(app.count(STORAGE_SUM).await, 25);
    assert_eq!(
        stored_files(&app),
        1,
        "the replaced version's bytes are removed"
    );

    let (status, current) = app
        .get(
            &format!("{}/v1/artifacts/{key}", app.gateway_url),
            Some(&app.api_key),
        )
        .await;
    assert_eq!(status, 200, "{current}");
    assert_eq!(current["id"], second["id"]);
    assert_eq!(current["size_bytes"], 25);
    let res = app
        .http
        .get(via_gateway(&app, str_of(&current, "download_url")))
        .send()
        .await
        .expect("download");
    assert_eq!(res.status().as_u16(), 200);
    assert_eq!(res.bytes().await.expect("bytes").as_ref(), &[b'b'; 25]);
    let (status, body) = app.get(&old_link, None).await;
    assert_eq!(status, 404, "the replaced version's link: {body}");

    // Concurrent writers of one key: still one live version, and the ledger nets to its size.
    let sizes: Vec<usize> = (1..=8).map(|i| i * 100).collect();
    let puts = sizes.iter().map(|&n| {
        let body = vec![b'c'; n];
        let app = &app;
        async move { put(app, key, &body, "application/octet-stream", None).await }
    });
    for (status, body) in futures_util::future::join_all(puts).await {
        assert_eq!(status, 201, "{body}");
    }
    assert_eq!(
        app.count("SELECT count(*) AS n FROM artifacts WHERE deleted_at IS NULL")
            .await,
        1
    );
    let live = app
        .count("SELECT size_bytes AS n FROM artifacts WHERE deleted_at IS NULL")
        .await;
    assert!(sizes.contains(&(live as usize)), "{live}");
    assert_eq!(app.count(STORAGE_SUM).await, live);
    assert_eq!(app.count(STORAGE_ENTRIES).await, 3 + 2 * 8);
    assert_eq!(stored_files(&app), 1);

    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signed_links_download_through_the_gateway_and_refuse_tampering() {
    let app = spawn().await;
    let bytes: Vec<u8> = (0..=255u8).cycle().take(3000).collect();
    let (status, created) = put(&app, "exports/data.bin", &bytes, "application/x-demo", None).await;
    assert_eq!(status, 201, "{created}");
    let id = str_of(&created, "id").to_owned();
    let link = via_gateway(&app, str_of(&created, "download_url"));

    // No API key: the signature is the credential.
    let res = app.http.get(&link).send().await.expect("download");
    assert_eq!(res.status().as_u16(), 200);
    assert_eq!(
        res.headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok()),
        Some("application/x-demo")
    );
    assert_eq!(
        res.headers()
            .get("content-disposition")
            .and_then(|v| v.to_str().ok()),
        Some(r#"attachment; filename="data.bin""#)
    );
    assert_eq!(res.bytes().await.expect("bytes").as_ref(), bytes.as_slice());

    // A fresh link from the metadata endpoint works too.
    let (status, meta) = app
        .get(
            &format!("{}/v1/artifacts/exports/data.bin", app.gateway_url),
            Some(&app.api_key),
        )
        .await;
    assert_eq!(status, 200, "{meta}");
    let res = app
        .http
        .get(via_gateway(&app, str_of(&meta, "download_url")))
        .send()
        .await
        .expect("download");
    assert_eq!(res.status().as_u16(), 200);

    // A tampered signature, a stretched expiry, a missing signature: 403.
    let last = link.chars().last().expect("non-empty");
    let flipped = if last == '0' { '1' } else { '0' };
    let tampered = format!("{}{flipped}", &link[..link.len() - 1]);
    let (status, body) = app.get(&tampered, None).await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(body["error"]["code"], "DOWNLOAD_LINK_INVALID");
    let expires: i64 = link
        .split("expires=")
        .nth(1)
        .and_then(|rest| rest.split('&').next())
        .and_then(|e| e.parse().ok())
        .expect("expires in link");
    let stretched = link.replace(
        &format!("expires={expires}"),
        &format!("expires={}", expires + 3600),
    );
    let (status, body) = app.get(&stretched, None).await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(body["error"]["code"], "DOWNLOAD_LINK_INVALID");
    let (status, body) = app
        .get(
            &format!("{}/v1/downloads/{id}?expires={expires}", app.gateway_url),
            None,
        )
        .await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(body["error"]["code"], "DOWNLOAD_LINK_INVALID");

    // A correctly signed link whose time is up.
    let past = chrono::Utc::now().timestamp() - 10;
    let signature = tollgate_job_intake::artifacts::sign_download(
        app.artifacts_signing_key.as_bytes(),
        &id,
        past,
    );
    let (status, body) = app
        .get(
            &format!(
                "{}/v1/downloads/{id}?expires={past}&signature={signature}",
                app.gateway_url
            ),
            None,
        )
        .await;
    assert_eq!(status, 410, "{body}");
    assert_eq!(body["error"]["code"], "DOWNLOAD_LINK_EXPIRED");

    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_keys_and_unknown_workspaces_store_and_meter_nothing() {
    let app = spawn().await;
    let too_long = "k".repeat(513);
    for key in ["bad%01key", "", too_long.as_str(), "/leading-slash"] {
        let (status, body) = put(&app, key, b"x", "text/plain", None).await;
        assert_eq!(status, 422, "key {key:?}: {body}");
        assert_eq!(body["error"]["code"], "INVALID_ARTIFACT_KEY", "key {key:?}");
    }

    let (status, body) = put(&app, "report.txt", b"abc", "text/plain", Some("nope")).await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["error"]["code"], "UNKNOWN_WORKSPACE");

    assert_eq!(app.count("SELECT count(*) AS n FROM artifacts").await, 0);
    assert_eq!(app.count(STORAGE_ENTRIES).await, 0);
    assert_eq!(stored_files(&app), 0);

    // Without an API key the gateway refuses before job-intake sees anything.
    let res = app
        .http
        .put(format!("{}/v1/artifacts/report.txt", app.gateway_url))
        .body("abc")
        .send()
        .await
        .expect("PUT");
    assert_eq!(res.status().as_u16(), 401);
    assert_eq!(app.count("SELECT count(*) AS n FROM artifacts").await, 0);

    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workspace_artifacts_are_metered_to_the_owning_account() {
    let app = spawn().await;
    let tenant = app.tenant.as_uuid();
    app.execute(&format!(
        "INSERT INTO accounts (id, tenant_id, kind, external_id, name) VALUES (gen_random_uuid(), '{tenant}', 'organization', 'acme', 'Acme')"
    ))
    .await
    .expect("account");
    app.execute(&format!(
        "INSERT INTO workspaces (id, tenant_id, account_id, external_id, name) SELECT gen_random_uuid(), '{tenant}', id, 'ws-main', 'Main' FROM accounts WHERE external_id = 'acme'"
    ))
    .await
    .expect("workspace");

    let (status, body) = put(
        &app,
        "ws/report.csv",
        b"a,b\n1,2\n",
        "text/csv",
        Some("ws-main"),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let (status, _) = delete(&app, "ws/report.csv").await;
    assert_eq!(status, 204);

    let attributed = "SELECT count(*) AS n FROM ledger_entries l \
         JOIN workspaces w ON w.id = l.workspace_id AND w.external_id = 'ws-main' \
         JOIN accounts a ON a.id = l.account_id AND a.external_id = 'acme' \
         WHERE l.metric = 'storage.bytes'";
    assert_eq!(app.count(attributed).await, 2, "+8 and -8, both to acme");
    assert_eq!(app.count(STORAGE_SUM).await, 0);

    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lists_live_artifacts_by_key_with_a_cursor() {
    let app = spawn().await;
    for key in ["c.txt", "a.txt", "b.txt"] {
        let (status, body) = put(&app, key, key.as_bytes(), "text/plain", None).await;
        assert_eq!(status, 201, "{body}");
    }
    let (status, _) = delete(&app, "b.txt").await;
    assert_eq!(status, 204);
    let (status, _) = put(&app, "d.txt", b"d", "text/plain", None).await;
    assert_eq!(status, 201);

    let base = format!("{}/v1/artifacts", app.gateway_url);
    let (status, page) = app
        .get(&format!("{base}?limit=2"), Some(&app.api_key))
        .await;
    assert_eq!(status, 200, "{page}");
    let keys: Vec<&str> = page["data"]
        .as_array()
        .expect("data")
        .iter()
        .map(|a| a["key"].as_str().expect("key"))
        .collect();
    assert_eq!(keys, ["a.txt", "c.txt"]);
    assert!(page["data"][0].get("download_url").is_none());
    let cursor = str_of(&page, "next_cursor");
    let (status, page) = app
        .get(
            &format!("{base}?limit=2&cursor={cursor}"),
            Some(&app.api_key),
        )
        .await;
    assert_eq!(status, 200, "{page}");
    assert_eq!(page["data"].as_array().map(Vec::len), Some(1));
    assert_eq!(page["data"][0]["key"], "d.txt");
    assert!(page["next_cursor"].is_null());

    let (status, body) = app
        .get(&format!("{base}?limit=0"), Some(&app.api_key))
        .await;
    assert_eq!(status, 422, "{body}");

    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_commit_removes_the_written_object() {
    let app = spawn().await;
    // Make the row insert fail after the object was written.
    app.execute(
        "CREATE FUNCTION refuse_artifacts() RETURNS trigger LANGUAGE plpgsql AS $$ \
         BEGIN RAISE EXCEPTION 'refused by the test'; END; $$",
    )
    .await
    .expect("function");
    app.execute(
        "CREATE TRIGGER refuse_artifacts BEFORE INSERT ON artifacts \
         FOR EACH ROW EXECUTE FUNCTION refuse_artifacts()",
    )
    .await
    .expect("trigger");

    let (status, body) = put(&app, "doomed.txt", b"0123456789", "text/plain", None).await;
    assert_eq!(status, 500, "{body}");
    assert_eq!(body["error"]["code"], "INTERNAL");
    assert_eq!(app.count("SELECT count(*) AS n FROM artifacts").await, 0);
    assert_eq!(app.count(STORAGE_ENTRIES).await, 0);
    assert_eq!(stored_files(&app), 0, "the orphan object was removed");

    app.stop().await;
}
