//! Reads the per-instance figures placement needs out of LXD's Prometheus text (`/1.0/metrics`).

use std::collections::BTreeMap;

/// What one instance uses, from its member's metrics.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct InstanceMetrics {
    /// Instance name.
    pub name: String,
    /// Project.
    pub project: String,
    /// CPU time used since the instance started, in seconds (all CPUs, all modes).
    pub cpu_seconds: f64,
    /// Memory in use by its cgroup (resident plus page cache), in bytes.
    pub memory_used_bytes: f64,
}

/// Sums `lxd_cpu_seconds_total` and takes `MemTotal - MemAvailable` per instance. Lines that
/// are not samples, or that cannot be read, are skipped: metrics are advisory.
pub fn parse_instance_metrics(text: &str) -> Vec<InstanceMetrics> {
    #[derive(Default)]
    struct Memory {
        rss: Option<f64>,
        cached: f64,
        total: f64,
        available: f64,
    }
    let mut by_instance: BTreeMap<(String, String), InstanceMetrics> = BTreeMap::new();
    let mut memory: BTreeMap<(String, String), Memory> = BTreeMap::new();
    for line in text.lines() {
        let Some((metric, labels, value)) = parse_sample(line) else {
            continue;
        };
        let (Some(name), Some(project)) = (labels.get("name"), labels.get("project")) else {
            continue;
        };
        let key = (project.clone(), name.clone());
        match metric {
            "lxd_cpu_seconds_total" => {
                by_instance.entry(key.clone()).or_default().cpu_seconds += value
            }
            "lxd_memory_RSS_bytes" => memory.entry(key.clone()).or_default().rss = Some(value),
            "lxd_memory_Cached_bytes" => memory.entry(key.clone()).or_default().cached = value,
            "lxd_memory_MemTotal_bytes" => memory.entry(key.clone()).or_default().total = value,
            "lxd_memory_MemAvailable_bytes" => {
                memory.entry(key.clone()).or_default().available = value
            }
            _ => continue,
        }
        let entry = by_instance.entry(key).or_default();
        entry.name.clone_from(name);
        entry.project.clone_from(project);
    }
    for (key, figures) in memory {
        if let Some(entry) = by_instance.get_mut(&key) {
            // The cgroup's own figures. MemTotal - MemAvailable is the host's view for an
            // instance without a memory limit, which would count the whole host once per
            // instance.
            entry.memory_used_bytes = match figures.rss {
                Some(rss) => rss + figures.cached,
                None => (figures.total - figures.available).max(0.0),
            };
        }
    }
    by_instance.into_values().collect()
}

/// `metric{a="x",b="y"} 1.5` → (metric, labels, value).
fn parse_sample(line: &str) -> Option<(&str, BTreeMap<String, String>, f64)> {
    if line.starts_with('#') || line.trim().is_empty() {
        return None;
    }
    let (series, value) = line.rsplit_once(' ')?;
    let value: f64 = value.trim().parse().ok()?;
    let (metric, labels) = match series.split_once('{') {
        Some((metric, rest)) => (metric, rest.strip_suffix('}')?),
        None => (series, ""),
    };
    let mut parsed = BTreeMap::new();
    let mut rest = labels;
    while let Some((key, after)) = rest.split_once("=\"") {
        let end = after.find('"')?;
        parsed.insert(
            key.trim_start_matches(',').to_owned(),
            after[..end].to_owned(),
        );
        rest = &after[end + 1..];
    }
    Some((metric, parsed, value))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_is_summed_over_cpus_and_modes_and_memory_is_what_the_cgroup_holds() {
        let text = r#"# HELP lxd_cpu_seconds_total The total number of CPU time used in seconds.
lxd_cpu_seconds_total{cpu="0",mode="system",name="m2",project="default",type="container"} 0.5
lxd_cpu_seconds_total{cpu="1",mode="user",name="m2",project="default",type="container"} 0.25
lxd_memory_MemAvailable_bytes{name="m2",project="default",type="container"} 2.4683493984e+10
lxd_memory_MemTotal_bytes{name="m2",project="default",type="container"} 2.4684093984e+10
lxd_memory_RSS_bytes{name="m2",project="default",type="container"} 500000
lxd_memory_Cached_bytes{name="m2",project="default",type="container"} 100000
lxd_filesystem_avail_bytes{device="",fstype="ext4",mountpoint="/",name="m2",project="default"} 8.4e+10
lxd_procs_total{name="other",project="p2",type="container"} 3
garbage line
"#;
        let metrics = parse_instance_metrics(text);
        assert_eq!(metrics.len(), 1);
        assert_eq!(metrics[0].name, "m2");
        assert!((metrics[0].cpu_seconds - 0.75).abs() < 1e-9);
        assert!((metrics[0].memory_used_bytes - 600_000.0).abs() < 1.0);
    }
}
