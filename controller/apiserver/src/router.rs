//! The HTTP layer: discovery, OpenAPI, and every resource path of the Kubernetes API
//! (`/api/v1/...`, `/apis/<group>/<version>/...`), dispatched to [`ApiState`].

use std::collections::HashMap;
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::{Value, json};

use super::listing::ListOptions;
use super::objects::{ApiState, FieldValidation, PatchKind, ScaleWrite, WriteOptions, Written};
use super::registry::Resource;
use super::schema::openapi;
use super::selectors::{FieldSelector, LabelSelector};
use super::status::ApiError;
use super::{discovery, listing, table, watch};

/// Kubernetes' limit on request bodies.
pub const MAX_BODY_BYTES: usize = 3 * 1024 * 1024;

/// The API server's routes, for tests (driven in-process) and for serving.
pub fn router(state: ApiState) -> Router {
    Router::new()
        .route(
            "/version",
            get(|| async { json_response(&discovery::version()) }),
        )
        .route("/healthz", get(|| async { "ok" }))
        .route("/livez", get(|| async { "ok" }))
        .route("/readyz", get(|| async { "ok" }))
        .route("/openapi/v3", get(openapi_index))
        .route("/openapi/v3/{*path}", get(openapi_document))
        .fallback(resources)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(state)
}

fn json_response(value: &Value) -> Response {
    let mut response = value.to_string().into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

fn with_status(code: u16, value: &Value) -> Response {
    let mut response = json_response(value);
    *response.status_mut() = StatusCode::from_u16(code).unwrap_or(StatusCode::OK);
    response
}

async fn openapi_index(State(state): State<ApiState>) -> Response {
    json_response(&openapi::index(&state.registry))
}

async fn openapi_document(State(state): State<ApiState>, uri: Uri) -> Response {
    let path = uri.path().trim_start_matches("/openapi/v3/");
    let segments: Vec<&str> = path.split('/').collect();
    let (group, version) = match segments.as_slice() {
        ["api", version] => ("", *version),
        ["apis", group, version] => (*group, *version),
        _ => return ApiError::no_route(uri.path()).into_response(),
    };
    json_response(&openapi::document(&state.registry, group, version))
}

/// A parsed resource path.
#[derive(Debug)]
struct Target {
    resource: Resource,
    namespace: Option<String>,
    name: Option<String>,
    subresource: Option<String>,
}

fn parse_query(uri: &Uri) -> HashMap<String, String> {
    // kube-rs sends `?&a=b`: empty pairs are skipped.
    url::form_urlencoded::parse(uri.query().unwrap_or_default().as_bytes())
        .filter(|(k, _)| !k.is_empty())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

fn header_text(headers: &HeaderMap, name: header::HeaderName) -> &str {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
}

fn parse_target(state: &ApiState, path: &str) -> Result<Option<Target>, ApiError> {
    let segments: Vec<&str> = path
        .trim_matches('/')
        .split('/')
        .filter(|s| !s.is_empty())
        .collect();
    let (group, version, rest) = match segments.as_slice() {
        ["api", version, rest @ ..] => ("", *version, rest),
        ["apis", group, version, rest @ ..] => (*group, *version, rest),
        _ => return Ok(None),
    };
    let find = |plural: &str| {
        state
            .registry
            .find(group, version, plural)
            .ok_or_else(|| ApiError::no_route(path))
    };
    let target = match rest {
        [] => return Ok(None),
        // A namespace itself, and its subresources.
        ["namespaces"] => Target {
            resource: find("namespaces")?,
            namespace: None,
            name: None,
            subresource: None,
        },
        ["namespaces", name] => Target {
            resource: find("namespaces")?,
            namespace: None,
            name: Some((*name).to_owned()),
            subresource: None,
        },
        ["namespaces", name, sub @ ("status" | "finalize")] => Target {
            resource: find("namespaces")?,
            namespace: None,
            name: Some((*name).to_owned()),
            subresource: Some((*sub).to_owned()),
        },
        ["namespaces", namespace, plural, tail @ ..] => {
            let resource = find(plural)?;
            if !resource.namespaced {
                return Err(ApiError::no_route(path));
            }
            match tail {
                [] => Target {
                    resource,
                    namespace: Some((*namespace).to_owned()),
                    name: None,
                    subresource: None,
                },
                [name] => Target {
                    resource,
                    namespace: Some((*namespace).to_owned()),
                    name: Some((*name).to_owned()),
                    subresource: None,
                },
                [name, sub] => Target {
                    resource,
                    namespace: Some((*namespace).to_owned()),
                    name: Some((*name).to_owned()),
                    subresource: Some((*sub).to_owned()),
                },
                _ => return Err(ApiError::no_route(path)),
            }
        }
        [plural, tail @ ..] => {
            let resource = find(plural)?;
            match tail {
                [] => Target {
                    resource,
                    namespace: None,
                    name: None,
                    subresource: None,
                },
                [name] if !resource.namespaced => Target {
                    resource,
                    namespace: None,
                    name: Some((*name).to_owned()),
                    subresource: None,
                },
                [name, sub] if !resource.namespaced => Target {
                    resource,
                    namespace: None,
                    name: Some((*name).to_owned()),
                    subresource: Some((*sub).to_owned()),
                },
                _ => return Err(ApiError::no_route(path)),
            }
        }
    };
    if let Some(sub) = &target.subresource {
        let served = match sub.as_str() {
            "status" => target.resource.status_subresource,
            "scale" => target.resource.scale.is_some(),
            _ => false,
        };
        if !served {
            return Err(ApiError::no_route(path));
        }
    }
    Ok(Some(target))
}

async fn resources(
    State(state): State<ApiState>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let body = match read_body_limited(body).await {
        Ok(body) => body,
        Err(error) => return error.into_response(),
    };
    let answered = crate::panics::catch("answering a request", || {
        dispatch(&state, &method, &uri, &headers, &body)
    });
    match answered {
        Ok(Ok(response)) => response,
        Ok(Err(error)) => error.into_response(),
        Err(panic) => {
            ApiError::internal(format!("{method} {uri} panicked: {panic}")).into_response()
        }
    }
}

/// How much of a body over the limit is still read (and dropped) before the 413: a server that
/// answers and closes while the client is still sending makes the kernel reset the connection,
/// and the client may never see the answer.
const DRAINED_BYTES: usize = 16 * 1024 * 1024;

/// The request body, or a 413 Status (as the Kubernetes API server answers, not a bare text)
/// when it is over [`MAX_BODY_BYTES`].
async fn read_body_limited(body: Body) -> Result<Bytes, ApiError> {
    use futures::StreamExt;
    let mut chunks = body.into_data_stream();
    let mut collected = Vec::new();
    let mut seen = 0usize;
    while let Some(chunk) = chunks.next().await {
        let chunk = chunk
            .map_err(|e| ApiError::bad_request(format!("the request body cannot be read: {e}")))?;
        seen += chunk.len();
        if seen <= MAX_BODY_BYTES {
            collected.extend_from_slice(&chunk);
        } else if seen > DRAINED_BYTES {
            break;
        }
    }
    if seen > MAX_BODY_BYTES {
        return Err(ApiError::too_large(MAX_BODY_BYTES));
    }
    Ok(Bytes::from(collected))
}

fn read_body(body: &Bytes) -> Result<Value, ApiError> {
    // serde_json refuses nesting deeper than 128 levels, so a deep body cannot exhaust the
    // stack; its size is bounded by MAX_BODY_BYTES.
    serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("the request body is not valid JSON: {e}")))
}

/// An applied configuration: YAML (JSON is YAML too).
fn read_apply_body(body: &Bytes) -> Result<Value, ApiError> {
    if let Ok(value) = serde_json::from_slice(body) {
        return Ok(value);
    }
    let text = std::str::from_utf8(body)
        .map_err(|e| ApiError::bad_request(format!("the request body is not UTF-8: {e}")))?;
    serde_saphyr::from_str(text)
        .map_err(|e| ApiError::bad_request(format!("the request body is not valid YAML: {e}")))
}

/// The write options of a request: its query parameters, the field manager defaulting to the
/// client's user agent (`kubectl/v1.32.0 (...)` manages as `kubectl`), as Kubernetes does.
fn write_options(
    query: &HashMap<String, String>,
    headers: &HeaderMap,
) -> Result<WriteOptions, ApiError> {
    let user_agent = header_text(headers, header::USER_AGENT);
    let from_agent = user_agent.split('/').next().unwrap_or_default().trim();
    Ok(WriteOptions {
        dry_run: query.get("dryRun").is_some_and(|d| d == "All"),
        field_manager: query
            .get("fieldManager")
            .filter(|m| !m.is_empty())
            .cloned()
            .or_else(|| (!from_agent.is_empty()).then(|| from_agent.to_owned())),
        field_validation: FieldValidation::parse(query.get("fieldValidation").map(String::as_str))?,
        force: query.get("force").is_some_and(|f| f == "true"),
    })
}

/// The response to a write: its object, with one `Warning` header per warning.
fn written_response(code: u16, written: &Written) -> Response {
    let mut response = with_status(code, &written.object);
    for warning in &written.warnings {
        let text = format!(
            "299 - \"{}\"",
            warning.replace('\\', "\\\\").replace('"', "\\\"")
        );
        if let Ok(value) = HeaderValue::from_str(&text) {
            response.headers_mut().append(header::WARNING, value);
        }
    }
    response
}

/// A parameter that counts something (`limit`, `timeoutSeconds`): absent, or a 400 naming it
/// when it is not a non-negative integer.
fn count_param(query: &HashMap<String, String>, name: &str) -> Result<Option<u64>, ApiError> {
    match query.get(name).map(String::as_str) {
        None | Some("") => Ok(None),
        Some(text) => text.parse().map(Some).map_err(|_| {
            ApiError::bad_request(format!(
                "{name}: Invalid value: \"{text}\": must be a non-negative integer"
            ))
        }),
    }
}

/// How long a watch may run: `timeoutSeconds`, at most [`MAX_WATCH_TIMEOUT`] (a deadline
/// must stay representable), 30 minutes when not given.
fn watch_timeout(query: &HashMap<String, String>) -> Result<Duration, ApiError> {
    let asked = count_param(query, "timeoutSeconds")?.unwrap_or(1800);
    Ok(Duration::from_secs(asked).min(MAX_WATCH_TIMEOUT))
}

/// The longest watch: a day, after which clients resume from their last resourceVersion.
const MAX_WATCH_TIMEOUT: Duration = Duration::from_secs(24 * 3600);

fn list_options(query: &HashMap<String, String>) -> Result<ListOptions, ApiError> {
    Ok(ListOptions {
        labels: LabelSelector::parse(
            query
                .get("labelSelector")
                .map(String::as_str)
                .unwrap_or_default(),
        )?,
        fields: FieldSelector::parse(
            query
                .get("fieldSelector")
                .map(String::as_str)
                .unwrap_or_default(),
        )?,
        limit: count_param(query, "limit")?.map_or(0, |l| usize::try_from(l).unwrap_or(usize::MAX)),
        continue_token: query.get("continue").filter(|c| !c.is_empty()).cloned(),
    })
}

fn dispatch(
    state: &ApiState,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: &Bytes,
) -> Result<Response, ApiError> {
    let path = uri.path();
    let query = parse_query(uri);
    let accept = header_text(headers, header::ACCEPT);
    match (method, path.trim_end_matches('/')) {
        (&Method::GET, "/api") if discovery::wants_aggregated(accept) => {
            return Ok(aggregated(&discovery::aggregated(&state.registry, true)));
        }
        (&Method::GET, "/api") => return Ok(json_response(&discovery::core_versions())),
        (&Method::GET, "/apis") if discovery::wants_aggregated(accept) => {
            return Ok(aggregated(&discovery::aggregated(&state.registry, false)));
        }
        (&Method::GET, "/apis") => {
            return Ok(json_response(&discovery::group_list(&state.registry)));
        }
        _ => {}
    }
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    if method == Method::GET {
        match segments.as_slice() {
            ["api", version] => {
                return discovery::resource_list(&state.registry, "", version)
                    .map(|d| json_response(&d))
                    .ok_or_else(|| ApiError::no_route(path));
            }
            ["apis", group] => {
                return discovery::group(&state.registry, group)
                    .map(|d| json_response(&d))
                    .ok_or_else(|| ApiError::no_route(path));
            }
            ["apis", group, version] => {
                return discovery::resource_list(&state.registry, group, version)
                    .map(|d| json_response(&d))
                    .ok_or_else(|| ApiError::no_route(path));
            }
            _ => {}
        }
    }
    // Built-in kinds are sent as protobuf by kubectl's typed commands: refuse it, and client-go
    // sends JSON instead.
    let content_type = header_text(headers, header::CONTENT_TYPE);
    if content_type.starts_with("application/vnd.kubernetes.protobuf") {
        return Err(ApiError::unsupported_media_type(content_type));
    }
    let target = parse_target(state, path)?.ok_or_else(|| ApiError::no_route(path))?;
    let resource = &target.resource;
    let namespace = target.namespace.as_deref();
    let options = write_options(&query, headers)?;
    let dry_run = options.dry_run;
    let status_only = target.subresource.as_deref() == Some("status");
    if let (Some(subresource), Some(name)) = (target.subresource.as_deref(), target.name.as_deref())
    {
        // A subresource is read, replaced and patched, nothing more: a DELETE of `/status`
        // must not delete the object.
        if !matches!(*method, Method::GET | Method::PUT | Method::PATCH) {
            return Err(ApiError::method_not_allowed(
                format!("{method} is not supported on {path}"),
                "GET, PUT, PATCH",
            ));
        }
        if subresource == "scale" {
            return scale(state, method, &target, name, headers, body, &options);
        }
    }
    let as_table = table::wants_table(accept);
    match (method.clone(), target.name.as_deref()) {
        (Method::GET, None) => {
            let options = list_options(&query)?;
            if query.get("watch").is_some_and(|w| w == "true" || w == "1") {
                let request = watch::WatchRequest {
                    namespace: target.namespace.clone(),
                    options,
                    resource_version: query.get("resourceVersion").cloned().unwrap_or_default(),
                    timeout: watch_timeout(&query)?,
                    bookmarks: query
                        .get("allowWatchBookmarks")
                        .is_some_and(|b| b == "true"),
                    initial_events: query.get("sendInitialEvents").is_some_and(|b| b == "true"),
                    table: as_table,
                };
                return watch::start(state, resource.clone(), request);
            }
            if let Some(response) = listing::stored(state, resource, namespace, &options, as_table)?
            {
                return Ok(response);
            }
            let (items, revision, next) = state.list(resource, namespace, &options)?;
            if as_table {
                return Ok(json_response(&table::table(
                    resource,
                    &items,
                    revision,
                    next.as_deref(),
                )));
            }
            let mut metadata = json!({"resourceVersion": revision.to_string()});
            if let Some(next) = next {
                metadata["continue"] = json!(next);
            }
            let api_version = resource.api_version();
            Ok(json_response(
                &json!({"kind": format!("{}List", resource.kind), "apiVersion": api_version, "metadata": metadata, "items": items}),
            ))
        }
        (Method::GET, Some(name)) => {
            let object = state.get(resource, namespace, name)?;
            if as_table {
                let revision = object["metadata"]["resourceVersion"]
                    .as_str()
                    .and_then(|r| r.parse().ok())
                    .unwrap_or(0);
                return Ok(json_response(&table::table(
                    resource,
                    &[object],
                    revision,
                    None,
                )));
            }
            Ok(json_response(&object))
        }
        (Method::POST, None) => {
            let created = state.create(resource, namespace, read_body(body)?, &options)?;
            Ok(written_response(201, &created))
        }
        (Method::PUT, Some(name)) => {
            let updated = state.update(
                resource,
                namespace,
                name,
                read_body(body)?,
                status_only,
                &options,
            )?;
            Ok(written_response(200, &updated))
        }
        (Method::PATCH, Some(name)) => {
            let (kind, patch) = read_patch(headers, body)?;
            let written = state.patch(
                resource,
                namespace,
                name,
                kind,
                &patch,
                status_only,
                &options,
            )?;
            Ok(written_response(
                if written.created { 201 } else { 200 },
                &written,
            ))
        }
        (Method::DELETE, Some(name)) => {
            let (code, object) = state.delete(resource, namespace, name, dry_run)?;
            Ok(with_status(code, &object))
        }
        (Method::DELETE, None) if resource.deletes_collections() => {
            let options = list_options(&query)?;
            let (items, revision, _) = state.list(resource, namespace, &options)?;
            let mut deleted = Vec::new();
            for item in items {
                let name = item["metadata"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned();
                let item_namespace = item["metadata"]["namespace"].as_str().map(str::to_owned);
                deleted.push(
                    state
                        .delete(resource, item_namespace.as_deref(), &name, dry_run)?
                        .1,
                );
            }
            Ok(json_response(
                &json!({"kind": format!("{}List", resource.kind), "apiVersion": resource.api_version(), "metadata": {"resourceVersion": revision.to_string()}, "items": deleted}),
            ))
        }
        (method, name) => Err(ApiError::method_not_allowed(
            format!("{method} is not supported on {path}"),
            match (name, resource.deletes_collections()) {
                (Some(_), _) => "GET, PUT, PATCH, DELETE",
                (None, true) => "GET, POST, DELETE",
                (None, false) => "GET, POST",
            },
        )),
    }
}

/// A PATCH's format (from its Content-Type) and body.
fn read_patch(headers: &HeaderMap, body: &Bytes) -> Result<(PatchKind, Value), ApiError> {
    let content_type = header_text(headers, header::CONTENT_TYPE);
    let kind = match content_type.split(';').next().unwrap_or_default().trim() {
        "application/json-patch+json" => PatchKind::Json,
        "application/merge-patch+json" | "application/json" | "" => PatchKind::Merge,
        "application/strategic-merge-patch+json" => PatchKind::Strategic,
        "application/apply-patch+yaml" => PatchKind::Apply,
        other => return Err(ApiError::unsupported_media_type(other)),
    };
    let patch = if kind == PatchKind::Apply {
        read_apply_body(body)?
    } else {
        read_body(body)?
    };
    // The Python client labels every patch merge-patch, JSON patches too.
    let kind = if kind == PatchKind::Merge && patch.is_array() {
        PatchKind::Json
    } else {
        kind
    };
    Ok((kind, patch))
}

/// `GET`, `PUT` and `PATCH` of `…/{name}/scale`, answered with the object's Scale.
fn scale(
    state: &ApiState,
    method: &Method,
    target: &Target,
    name: &str,
    headers: &HeaderMap,
    body: &Bytes,
    options: &WriteOptions,
) -> Result<Response, ApiError> {
    let resource = &target.resource;
    let namespace = target.namespace.as_deref();
    let (kind, sent) = match *method {
        Method::GET => {
            return Ok(json_response(&state.get_scale(resource, namespace, name)?));
        }
        Method::PUT => (None, read_body(body)?),
        _ => {
            let (kind, patch) = read_patch(headers, body)?;
            // Server-side apply of a Scale would need field ownership mapped between the
            // Scale and the object, which this server does not keep.
            if kind == PatchKind::Apply {
                return Err(ApiError::unsupported_media_type(
                    "application/apply-patch+yaml",
                ));
            }
            (Some(kind), patch)
        }
    };
    let write = match kind {
        None => ScaleWrite::Replace(&sent),
        Some(kind) => ScaleWrite::Patch(kind, &sent),
    };
    let scale = state.write_scale(resource, namespace, name, write, options)?;
    Ok(json_response(&scale))
}

fn aggregated(value: &Value) -> Response {
    let mut response = value.to_string().into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(discovery::AGGREGATED_CONTENT_TYPE),
    );
    response
        .headers_mut()
        .insert(header::VARY, HeaderValue::from_static("Accept"));
    response
}

#[cfg(test)]
mod tests;
