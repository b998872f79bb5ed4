//! Events over one store for two APIs: kube-rs writes `events.k8s.io/v1` Events, `kubectl
//! describe` reads core `v1` ones. They are stored in the core form and shown in the form of
//! the API asked.

use serde_json::{Map, Value, json};

use crate::registry::{Resource, Role};

fn is_events_api(resource: &Resource) -> bool {
    resource.role == Role::EventsApiEvent
}

/// Whether `resource` shows objects as they are stored ([`present`] changes nothing).
pub fn shown_as_stored(resource: &Resource) -> bool {
    !is_events_api(resource)
}

fn moved(from: &mut Map<String, Value>, to: &mut Map<String, Value>, old: &str, new: &str) {
    if let Some(value) = from.remove(old) {
        to.insert(new.to_owned(), value);
    }
}

/// An object as it is stored: an `events.k8s.io` Event becomes a core Event.
pub fn store_form(resource: &Resource, object: Value) -> Value {
    if !is_events_api(resource) {
        return object;
    }
    let Value::Object(mut from) = object else {
        return object;
    };
    let mut core = Map::new();
    for (old, new) in [
        ("metadata", "metadata"),
        ("regarding", "involvedObject"),
        ("related", "related"),
        ("note", "message"),
        ("reason", "reason"),
        ("type", "type"),
        ("action", "action"),
        ("reportingController", "reportingComponent"),
        ("reportingInstance", "reportingInstance"),
        ("eventTime", "eventTime"),
        ("series", "series"),
        ("deprecatedCount", "count"),
        ("deprecatedFirstTimestamp", "firstTimestamp"),
        ("deprecatedLastTimestamp", "lastTimestamp"),
        ("deprecatedSource", "source"),
    ] {
        moved(&mut from, &mut core, old, new);
    }
    core.insert("apiVersion".to_owned(), json!("v1"));
    core.insert("kind".to_owned(), json!("Event"));
    // What `kubectl describe` prints: who reported it, how often, since when.
    if !core.contains_key("source")
        && let Some(controller) = core.get("reportingComponent").cloned()
    {
        core.insert("source".to_owned(), json!({"component": controller}));
    }
    let event_time = core.get("eventTime").cloned().filter(|t| !t.is_null());
    let series = core.get("series").cloned().filter(|s| !s.is_null());
    if let Some(series) = &series {
        core.insert("count".to_owned(), series["count"].clone());
        if let Some(last) = series.get("lastObservedTime") {
            core.insert("lastTimestamp".to_owned(), json!(truncate_time(last)));
        }
    }
    if let Some(time) = &event_time {
        core.entry("firstTimestamp")
            .or_insert_with(|| json!(truncate_time(time)));
        core.entry("lastTimestamp")
            .or_insert_with(|| json!(truncate_time(time)));
    }
    core.entry("count").or_insert(json!(1));
    Value::Object(core)
}

/// `2026-11-25T03:00:00.123456Z` as a seconds timestamp, the format of the core fields.
fn truncate_time(time: &Value) -> String {
    let text = time.as_str().unwrap_or_default();
    match text.split_once('.') {
        Some((seconds, _)) => format!("{seconds}Z"),
        None => text.to_owned(),
    }
}

/// An object as the API asked shows it: a stored Event in the `events.k8s.io` form when asked
/// through that API.
pub fn present(resource: &Resource, object: Value) -> Value {
    if !is_events_api(resource) {
        return object;
    }
    let Value::Object(mut from) = object else {
        return object;
    };
    let mut events = Map::new();
    for (old, new) in [
        ("metadata", "metadata"),
        ("involvedObject", "regarding"),
        ("related", "related"),
        ("message", "note"),
        ("reason", "reason"),
        ("type", "type"),
        ("action", "action"),
        ("reportingComponent", "reportingController"),
        ("reportingInstance", "reportingInstance"),
        ("eventTime", "eventTime"),
        ("series", "series"),
        ("count", "deprecatedCount"),
        ("firstTimestamp", "deprecatedFirstTimestamp"),
        ("lastTimestamp", "deprecatedLastTimestamp"),
        ("source", "deprecatedSource"),
    ] {
        moved(&mut from, &mut events, old, new);
    }
    events.insert("apiVersion".to_owned(), json!("events.k8s.io/v1"));
    events.insert("kind".to_owned(), json!("Event"));
    Value::Object(events)
}
