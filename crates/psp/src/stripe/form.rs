//! Stripe's request encoding: `application/x-www-form-urlencoded` with nested keys in
//! brackets (`metadata[tollgate_invoice]=…`, `automatic_payment_methods[enabled]=true`,
//! `expand[]=…`), as <https://docs.stripe.com/api/metadata> and the curl examples throughout
//! <https://docs.stripe.com/api> show. The same encoding carries list filters in query strings
//! (`created[gte]=1700000000`).

use std::collections::BTreeMap;

/// Ordered `key=value` pairs, encoded once at the end.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Form {
    pairs: Vec<(String, String)>,
}

impl Form {
    pub(crate) fn new() -> Self {
        Self::default()
    }

    pub(crate) fn push(&mut self, key: impl Into<String>, value: impl Into<String>) -> &mut Self {
        self.pairs.push((key.into(), value.into()));
        self
    }

    /// Adds the pair only when there is a value.
    pub(crate) fn opt(&mut self, key: &str, value: Option<&str>) -> &mut Self {
        if let Some(value) = value {
            self.push(key, value);
        }
        self
    }

    /// Adds `prefix[key]=value` for every entry.
    pub(crate) fn map(&mut self, prefix: &str, entries: &BTreeMap<String, String>) -> &mut Self {
        for (key, value) in entries {
            self.push(format!("{prefix}[{key}]"), value.as_str());
        }
        self
    }

    #[cfg(test)]
    pub(crate) fn pairs(&self) -> &[(String, String)] {
        &self.pairs
    }

    /// The percent-encoded body / query string (`form_urlencoded`, the WHATWG URL
    /// standard's `application/x-www-form-urlencoded` serializer).
    pub(crate) fn encode(&self) -> String {
        url::form_urlencoded::Serializer::new(String::new())
            .extend_pairs(self.pairs.iter())
            .finish()
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn keys(form: &Form) -> Vec<String> {
        form.pairs().iter().map(|(k, _)| k.clone()).collect()
    }

    #[test]
    fn encodes_nested_keys_and_escapes() {
        let mut form = Form::new();
        form.push("amount", "1999")
            .opt("description", Some("Invoice #42 & more"))
            .opt("customer", None)
            .map(
                "metadata",
                &BTreeMap::from([
                    ("tollgate_invoice".to_owned(), "inv 1".to_owned()),
                    ("a=b".to_owned(), "é".to_owned()),
                ]),
            );
        assert_eq!(
            form.encode(),
            "amount=1999&description=Invoice+%2342+%26+more\
             &metadata%5Ba%3Db%5D=%C3%A9&metadata%5Btollgate_invoice%5D=inv+1"
        );
        let decoded: Vec<(String, String)> = url::form_urlencoded::parse(form.encode().as_bytes())
            .into_owned()
            .collect();
        assert_eq!(decoded, form.pairs());
    }
}
