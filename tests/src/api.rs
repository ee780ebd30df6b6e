//! Request helpers for the metering API tests: JSON in, (status, JSON) out, through the
//! gateway with the test tenant's API key.

use serde_json::Value;

use crate::TestApp;

impl TestApp {
    /// `POST {gateway}{path}` with a JSON body.
    pub async fn post_json(&self, path: &str, body: &Value) -> (u16, Value) {
        let res = self
            .http
            .post(format!("{}{path}", self.gateway_url))
            .bearer_auth(&self.api_key)
            .json(body)
            .send()
            .await
            .expect("POST");
        let status = res.status().as_u16();
        (status, res.json().await.unwrap_or(Value::Null))
    }

    /// `GET {gateway}{path_and_query}`.
    pub async fn get_json(&self, path_and_query: &str) -> (u16, Value) {
        self.get(
            &format!("{}{path_and_query}", self.gateway_url),
            Some(self.api_key.as_str()),
        )
        .await
    }

    /// `GET {gateway}{path_and_query}` as text, with the response's content type.
    pub async fn get_text(&self, path_and_query: &str) -> (u16, String, String) {
        let res = self
            .http
            .get(format!("{}{path_and_query}", self.gateway_url))
            .bearer_auth(&self.api_key)
            .send()
            .await
            .expect("GET");
        let status = res.status().as_u16();
        let content_type = res
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        (status, content_type, res.text().await.unwrap_or_default())
    }

    /// Runs `tollgatectl` in-process against the test database.
    pub async fn ctl(&self, args: &[&str]) -> anyhow::Result<()> {
        let mut argv = vec!["tollgatectl", "--database-url", self.db_url.as_str()];
        argv.extend_from_slice(args);
        tollgate_cli::run_from(argv).await
    }

    /// Applies a metrics TOML text to the test tenant (`tollgatectl metrics apply`).
    pub async fn apply_metrics(&self, toml_text: &str) {
        let path = std::env::temp_dir().join(format!("tg-metrics-{}.toml", uuid::Uuid::new_v4()));
        std::fs::write(&path, toml_text).expect("write metrics file");
        let path_text = path.to_string_lossy().into_owned();
        self.ctl(&[
            "metrics",
            "apply",
            "--tenant",
            &self.tenant_name,
            &path_text,
        ])
        .await
        .expect("metrics apply");
        let _ = std::fs::remove_file(&path);
    }
}
