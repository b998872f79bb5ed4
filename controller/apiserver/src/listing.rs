//! Reads: one object, and lists, filtered by selectors and paged with continue tokens (the
//! key of the last object sent). With no selector and no paging, a list is every object's text
//! in key order, copied into the answer undecoded ([`stored`]); a Table reads only what its
//! cells need. Other lists go through [`ApiState::list`].

use axum::body::Body;
use axum::http::{HeaderValue, header};
use axum::response::Response;
use serde_json::Value;

use crate::events;
use crate::objects::{ApiState, meta_str};
use crate::registry::Resource;
use crate::selectors::{FieldSelector, LabelSelector};
use crate::status::ApiError;
use crate::table;

/// How a list is narrowed.
#[derive(Debug, Default, Clone)]
pub struct ListOptions {
    /// `labelSelector`.
    pub labels: LabelSelector,
    /// `fieldSelector`.
    pub fields: FieldSelector,
    /// `limit` (0: no limit).
    pub limit: usize,
    /// `continue`.
    pub continue_token: Option<String>,
}

impl ApiState {
    /// Reads one object.
    pub fn get(
        &self,
        resource: &Resource,
        namespace: Option<&str>,
        name: &str,
    ) -> Result<Value, ApiError> {
        let object = self
            .store
            .get(&resource.key(namespace, name))?
            .ok_or_else(|| ApiError::not_found(&resource.group, &resource.plural, name))?;
        Ok(events::present(resource, object))
    }

    /// Lists objects, filtered and paged, with the revision they were read at.
    pub fn list(
        &self,
        resource: &Resource,
        namespace: Option<&str>,
        options: &ListOptions,
    ) -> Result<(Vec<Value>, i64, Option<String>), ApiError> {
        let (objects, revision) = self.store.list(&resource.prefix(namespace))?;
        let after = options
            .continue_token
            .as_deref()
            .map(decode_continue)
            .transpose()?;
        let mut items = Vec::new();
        let mut next = None;
        for object in objects {
            let key = resource.key(
                meta_str(&object, "namespace"),
                meta_str(&object, "name").unwrap_or_default(),
            );
            if after.as_deref().is_some_and(|after| key.as_str() <= after) {
                continue;
            }
            let object = events::present(resource, object);
            if !(options.labels.matches(&object) && options.fields.matches(&object)) {
                continue;
            }
            if options.limit > 0 && items.len() == options.limit {
                next = Some(encode_continue(&last_key(resource, &items)));
                break;
            }
            items.push(object);
        }
        Ok((items, revision, next))
    }
}

fn last_key(resource: &Resource, items: &[Value]) -> String {
    items
        .last()
        .map(|o| {
            resource.key(
                meta_str(o, "namespace"),
                meta_str(o, "name").unwrap_or_default(),
            )
        })
        .unwrap_or_default()
}

fn encode_continue(key: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(key)
}

fn decode_continue(token: &str) -> Result<String, ApiError> {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(token)
        .ok()
        .and_then(|bytes| String::from_utf8(bytes).ok())
        .ok_or_else(|| ApiError::bad_request("invalid continue token"))
}

/// The answer to a list that needs no decoding, or `None` for [`ApiState::list`] to answer.
pub fn stored(
    state: &ApiState,
    resource: &Resource,
    namespace: Option<&str>,
    options: &ListOptions,
    as_table: bool,
) -> Result<Option<Response>, ApiError> {
    let plain = events::shown_as_stored(resource)
        && options.labels == LabelSelector::default()
        && options.fields == FieldSelector::default()
        && options.limit == 0
        && options.continue_token.is_none();
    if !plain {
        return Ok(None);
    }
    let (texts, revision) = state.store.list_text(&resource.prefix(namespace))?;
    let body = if as_table {
        table::stored_table(resource, &texts, revision).map_err(ApiError::internal)?
    } else {
        let api_version = resource.api_version();
        let mut body =
            String::with_capacity(texts.iter().map(|t| t.len() + 1).sum::<usize>() + 256);
        body.push_str(r#"{"apiVersion":"#);
        body.push_str(&Value::from(api_version).to_string());
        body.push_str(r#","items":["#);
        for (i, text) in texts.iter().enumerate() {
            if i > 0 {
                body.push(',');
            }
            body.push_str(text);
        }
        body.push_str(r#"],"kind":"#);
        body.push_str(&Value::from(format!("{}List", resource.kind)).to_string());
        body.push_str(&format!(
            r#","metadata":{{"resourceVersion":"{revision}"}}}}"#
        ));
        body
    };
    let mut response = Response::new(Body::from(body));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    Ok(Some(response))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[tokio::test]
    async fn a_list_of_stored_text_is_the_list_of_the_objects() {
        let dir = tempfile::tempdir().unwrap();
        let state = crate::open(dir.path(), 1000).unwrap();
        let resource = state
            .registry
            .find("lxd-operator.dev", "v1alpha1", "lxdcontainers")
            .unwrap();
        for name in ["b", "a", "c"] {
            let object = json!({"apiVersion": "lxd-operator.dev/v1alpha1", "kind": "LxdContainer",
                "metadata": {"name": name, "labels": {"app": "x"}},
                "spec": {"clusterRef": {"name": "local"}, "image": {"alias": "busybox"}}});
            state
                .create(&resource, Some("default"), object, &Default::default())
                .unwrap();
        }
        let body = |table: bool| {
            let response = stored(
                &state,
                &resource,
                Some("default"),
                &ListOptions::default(),
                table,
            )
            .unwrap()
            .unwrap();
            async move {
                let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
                    .await
                    .unwrap();
                serde_json::from_slice::<Value>(&bytes).unwrap()
            }
        };
        let (items, revision, _) = state
            .list(&resource, Some("default"), &ListOptions::default())
            .unwrap();
        let expected = json!({"kind": "LxdContainerList", "apiVersion": "lxd-operator.dev/v1alpha1",
            "metadata": {"resourceVersion": revision.to_string()}, "items": items});
        assert_eq!(body(false).await, expected);
        assert_eq!(
            body(true).await,
            table::table(&resource, &items, revision, None)
        );
        let selected = ListOptions {
            labels: LabelSelector::parse("app=x").unwrap(),
            ..Default::default()
        };
        assert!(
            stored(&state, &resource, Some("default"), &selected, false)
                .unwrap()
                .is_none()
        );
    }
}
