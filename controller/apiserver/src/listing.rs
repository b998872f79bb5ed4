//! Lists answered from the stored JSON as it is. With no selector and no paging, a list is every
//! object's text in key order, copied into the answer undecoded; a Table reads only what its
//! cells need. Other lists go through [`ApiState::list`].

use axum::body::Body;
use axum::http::{HeaderValue, header};
use axum::response::Response;

use super::events;
use super::objects::{ApiState, ListOptions};
use super::registry::Resource;
use super::selectors::{FieldSelector, LabelSelector};
use super::status::ApiError;
use super::table;

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
        body.push_str(&serde_json::Value::from(api_version).to_string());
        body.push_str(r#","items":["#);
        for (i, text) in texts.iter().enumerate() {
            if i > 0 {
                body.push(',');
            }
            body.push_str(text);
        }
        body.push_str(r#"],"kind":"#);
        body.push_str(&serde_json::Value::from(format!("{}List", resource.kind)).to_string());
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
    use serde_json::{Value, json};

    use super::*;

    #[tokio::test]
    async fn a_list_of_stored_text_is_the_list_of_the_objects() {
        let dir = tempfile::tempdir().unwrap();
        let state = super::super::open(dir.path(), 1000).unwrap();
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
