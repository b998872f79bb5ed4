//! Events over one store for two APIs: kube-rs writes `events.k8s.io/v1` Events, `kubectl
//! describe` reads core `v1` ones. They are stored in the core form and shown in the form of
//! the API asked.

use std::time::Duration;

use serde_json::{Map, Value, json};

use crate::objects::ApiState;
use crate::registry::{Resource, Role};
use crate::status::ApiError;

/// How long an Event is kept, as kube-apiserver's `--event-ttl` by default: controllers write
/// Events all the time, and a store that kept them would only grow.
pub const EVENT_TTL: Duration = Duration::from_secs(3600);

/// Deletes the Events last seen (or made) more than `ttl` before `now`, through the store, so
/// that watchers see them go; returns how many.
pub fn expire(state: &ApiState, now: jiff::Timestamp, ttl: Duration) -> Result<usize, ApiError> {
    let Some(events) = state.registry.find("", "v1", "events") else {
        return Ok(0);
    };
    let (stored, _) = state.store.list(&events.prefix(None))?;
    let mut expired = 0;
    for event in stored {
        let seen = ["lastTimestamp", "eventTime", "firstTimestamp"]
            .iter()
            .find_map(|field| event[*field].as_str())
            .or_else(|| event["metadata"]["creationTimestamp"].as_str())
            .and_then(|text| text.parse::<jiff::Timestamp>().ok());
        let old =
            seen.is_some_and(|seen| now.duration_since(seen).unsigned_abs() > ttl && seen < now);
        let (Some(namespace), Some(name)) = (
            event["metadata"]["namespace"].as_str(),
            event["metadata"]["name"].as_str(),
        ) else {
            continue;
        };
        if old {
            match state.delete(&events, Some(namespace), name, false) {
                Ok(_) => expired += 1,
                // Deleted meanwhile by someone else: nothing to expire.
                Err(error) if error.code == 404 => {}
                Err(error) => return Err(error),
            }
        }
    }
    Ok(expired)
}

fn is_events_api(resource: &Resource) -> bool {
    resource.role == Role::EventsApiEvent
}

/// Whether `resource` shows objects as they are stored ([`present`] changes nothing).
pub fn shown_as_stored(resource: &Resource) -> bool {
    !is_events_api(resource)
}

/// Each field of an `events.k8s.io` Event and its name in a core Event: read one way to store
/// an Event, the other way to show it.
const FIELDS: [(&str, &str); 15] = [
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
];

/// Which way an Event's fields are renamed.
#[derive(Clone, Copy)]
enum Form {
    /// To the core names, as stored.
    Core,
    /// To the `events.k8s.io` names, as that API shows them.
    EventsApi,
}

/// An `events.k8s.io` Event's fields renamed to `form` with [`FIELDS`] (fields it does not
/// name are dropped), its kind and apiVersion set; any other object as it is.
fn renamed(resource: &Resource, object: Value, form: Form) -> Result<Map<String, Value>, Value> {
    if !is_events_api(resource) {
        return Err(object);
    }
    let Value::Object(mut from) = object else {
        return Err(object);
    };
    let mut to = Map::new();
    for (events_field, core_field) in FIELDS {
        let (old, new) = match form {
            Form::Core => (events_field, core_field),
            Form::EventsApi => (core_field, events_field),
        };
        if let Some(value) = from.remove(old) {
            to.insert(new.to_owned(), value);
        }
    }
    let api_version = match form {
        Form::Core => "v1",
        Form::EventsApi => "events.k8s.io/v1",
    };
    to.insert("apiVersion".to_owned(), json!(api_version));
    to.insert("kind".to_owned(), json!("Event"));
    Ok(to)
}

/// An object as it is stored: an `events.k8s.io` Event becomes a core Event.
pub fn store_form(resource: &Resource, object: Value) -> Value {
    let mut core = match renamed(resource, object, Form::Core) {
        Ok(core) => core,
        Err(object) => return object,
    };
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
    renamed(resource, object, Form::EventsApi).map_or_else(|object| object, Value::Object)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::Registry;

    #[test]
    fn an_events_api_event_is_stored_in_the_core_form_and_shown_back_in_its_own() {
        let events = Registry::default()
            .find("events.k8s.io", "v1", "events")
            .unwrap();
        let event = json!({"apiVersion": "events.k8s.io/v1", "kind": "Event",
            "metadata": {"name": "e"}, "regarding": {"name": "web"}, "note": "started",
            "reason": "Started", "reportingController": "lxd-operator", "deprecatedCount": 2});
        let stored = store_form(&events, event.clone());
        assert_eq!(stored["apiVersion"], "v1");
        assert_eq!(stored["involvedObject"], event["regarding"]);
        assert_eq!(stored["message"], "started");
        assert_eq!(stored["source"], json!({"component": "lxd-operator"}));
        let shown = present(&events, stored);
        for field in [
            "metadata",
            "regarding",
            "note",
            "reason",
            "reportingController",
        ] {
            assert_eq!(shown[field], event[field], "{field}");
        }
        assert_eq!(shown["deprecatedCount"], 2);
        assert_eq!(shown["apiVersion"], "events.k8s.io/v1");
    }
}
