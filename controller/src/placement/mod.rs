//! The placement engine: which member a container goes to. A library with no I/O: inputs are
//! the container's [`model::Request`] and a [`model::Snapshot`] of the members; the output is a
//! [`Decision`] with its explanation, or [`Unschedulable`] with counted reasons.
//!
//! As kube-scheduler's framework: filter plugins leave members out (each with a reason), score
//! plugins rate the rest from 0 to 100, a [`policy::Policy`] weights the scores, and ties are
//! broken deterministically (by member name, or a seeded rotation for round-robin). A policy's
//! webhook takes part between scoring and deciding ([`Evaluation::webhook_request`],
//! [`Evaluation::apply_webhook`]), so the core stays free of HTTP.
//!
//! Consistency under bursts: figures from LXD lag behind decisions. The caller keeps
//! [`reservations::Reservations`] for decisions whose instance LXD does not show yet, applies
//! them to the snapshot, and serializes the decisions of one cluster (it holds the reservations
//! lock from snapshot to decision), so that a burst spreads as the policy says.
//!
//! Cost: a decision goes through the members, never through the placed containers per member.
//! The snapshot keeps the placed containers counted per member by (namespace, labels) group,
//! current as decisions land ([`model::Snapshot::land`]); what the request's terms and spread
//! constraints need is summed once per decision ([`plugins::Context::new`]); filters and scorers
//! that cannot tell members apart for the request are skipped; members are kept by index and
//! names written out only for what an explanation shows. `hack/bench placement` measures it.

pub mod burst;
pub mod model;
pub mod plugins;
pub mod policy;
pub mod rebalance;
pub mod reservations;
pub mod selector;
pub mod webhook;

use std::collections::{BTreeMap, HashMap};
use std::fmt;

use lxd_operator_crds::policy::TieBreak;

use self::model::{Request, Snapshot};
use self::plugins::{Context, MemberRef, Reason};
use self::policy::Policy;
use self::webhook::{WebhookContainer, WebhookMember, WebhookRequest, WebhookResponse};

/// A member that passed the filters, with its scores.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Candidate {
    /// The member's index in the snapshot.
    pub index: usize,
    /// Weighted sum of the scores.
    pub total: f64,
}

/// Filters and scores applied; the decision still to make. Members are kept by index: names
/// are written out only for what a decision shows.
#[derive(Debug, Clone)]
pub struct Evaluation<'a> {
    /// The policy's name.
    pub policy: String,
    request: &'a Request,
    snapshot: &'a Snapshot,
    /// Members that passed, in snapshot order.
    candidates: Vec<Candidate>,
    /// Members left out, by index, with the reason.
    filtered: Vec<(usize, Reason)>,
    /// What the plugins say decided (topology spread counts), for the explanation.
    notes: Vec<String>,
    tie_break: TieBreak,
}

/// The decision.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    /// The chosen member.
    pub member: String,
    /// Why.
    pub explanation: Explanation,
}

/// Why a member was chosen: its score beside the best others', and why some of the rest were
/// left out. Holds only what it shows: a cluster of thousands of members has no room in a
/// status, and writing out every name would cost more than the decision.
#[derive(Debug, Clone, PartialEq)]
pub struct Explanation {
    /// The policy or strategy.
    pub policy: String,
    /// The winner.
    pub winner: String,
    /// The best candidates' weighted scores (at most [`SHOWN`]), best first, ties by name.
    pub scores: Vec<(String, f64)>,
    /// How many candidates there were.
    pub candidates: usize,
    /// Members left out, with the reason (at most [`SHOWN`], by member name).
    pub filtered: Vec<(String, String)>,
    /// How many members were left out.
    pub filtered_count: usize,
    /// What the plugins say decided, e.g. `topology spread zone: a 3, b 2 (min 2, maxSkew 1)`.
    pub notes: Vec<String>,
}

/// Candidates shown in the short explanation; the status has no room for a thousand members.
pub const SHOWN: usize = 5;

impl fmt::Display for Explanation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut shown: Vec<String> = self
            .scores
            .iter()
            .map(|(m, s)| format!("{m} {s:.1}"))
            .collect();
        if self.candidates > self.scores.len() {
            shown.push(format!("{} more", self.candidates - self.scores.len()));
        }
        write!(
            f,
            "{} scored best by {} ({})",
            self.winner,
            self.policy,
            shown.join(", ")
        )?;
        if !self.filtered.is_empty() {
            let filtered: Vec<String> = self
                .filtered
                .iter()
                .map(|(m, r)| format!("{m}: {r}"))
                .collect();
            write!(f, "; left out: {}", filtered.join(", "))?;
            if self.filtered_count > self.filtered.len() {
                write!(f, " and {} more", self.filtered_count - self.filtered.len())?;
            }
        }
        for note in &self.notes {
            write!(f, "; {note}")?;
        }
        Ok(())
    }
}

/// No member can take the container.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct Unschedulable {
    /// `0/3 members: 2 insufficient memory, 1 offline`.
    pub message: String,
}

/// Runs the policy's filters and scorers.
pub fn evaluate<'a>(
    policy: &Policy,
    request: &'a Request,
    snapshot: &'a Snapshot,
) -> Evaluation<'a> {
    let context = Context::new(request, snapshot, policy.overcommit);
    let filters: Vec<&dyn plugins::Filter> = policy
        .filters
        .iter()
        .map(|filter| &**filter)
        .filter(|filter| filter.applies(&context))
        .collect();
    // Members stay in snapshot order: sorting them by name would make every decision
    // O(n log n); names only order ties and explanations.
    let mut passed: Vec<MemberRef<'_>> = Vec::with_capacity(snapshot.members().len());
    let mut filtered = Vec::new();
    for (index, member) in snapshot.members().iter().enumerate() {
        let member = MemberRef { index, member };
        match filters
            .iter()
            .find_map(|filter| filter.filter(&context, member))
        {
            Some(reason) => filtered.push((index, reason)),
            None => passed.push(member),
        }
    }
    let mut totals = vec![0.0; passed.len()];
    for (scorer, weight) in &policy.scorers {
        if let Some(score) = scorer.uniform(&context) {
            totals.iter_mut().for_each(|total| *total += weight * score);
            continue;
        }
        let scores = scorer.score(&context, &passed);
        for (total, score) in totals.iter_mut().zip(scores) {
            *total += weight * score;
        }
    }
    let candidates = passed
        .iter()
        .zip(totals)
        .map(|(member, total)| Candidate {
            index: member.index,
            total,
        })
        .collect();
    let notes = policy
        .filters
        .iter()
        .filter_map(|filter| filter.explain(&context))
        .chain(
            policy
                .scorers
                .iter()
                .filter_map(|(scorer, _)| scorer.explain(&context)),
        )
        .chain(held_with_pods(snapshot))
        .collect();
    Evaluation {
        policy: policy.name.clone(),
        request,
        snapshot,
        candidates,
        filtered,
        notes,
        tie_break: policy.tie_break,
    }
}

/// What is held on the members whose Kubernetes Node has Pods requesting memory, both parts
/// (`memory held with pods: node2: 14.2 GiB of 16 GiB held, 11 GiB by pods`), for at most
/// [`SHOWN`] members by name.
fn held_with_pods(snapshot: &Snapshot) -> Option<String> {
    let shown = smallest(
        snapshot.members().iter().filter(|m| m.pods.memory > 0.0),
        |a, b| a.name.cmp(&b.name),
    );
    if shown.is_empty() {
        return None;
    }
    let parts: Vec<String> = shown
        .iter()
        .map(|m| {
            format!(
                "{}: {} of {} held, {} by pods",
                m.name,
                model::format_bytes(m.held().memory),
                model::format_bytes(m.capacity.memory),
                model::format_bytes(m.pods.memory)
            )
        })
        .collect();
    Some(format!("memory held with pods: {}", parts.join(", ")))
}

impl<'a> Evaluation<'a> {
    /// The name of the member at `index`.
    fn name(&self, index: usize) -> &'a str {
        self.snapshot
            .members()
            .get(index)
            .map_or("", |m| m.name.as_str())
    }

    /// The candidates (member name, weighted score), in snapshot order.
    pub fn candidates(&self) -> impl Iterator<Item = (&'a str, f64)> + '_ {
        self.candidates
            .iter()
            .map(|c| (self.name(c.index), c.total))
    }

    /// The members left out (member name, reason), in snapshot order.
    pub fn filtered(&self) -> impl Iterator<Item = (&'a str, String)> + '_ {
        self.filtered.iter().map(|(index, reason)| {
            (
                self.name(*index),
                reason.text(self.request, self.snapshot).into_owned(),
            )
        })
    }

    /// What to send to the policy's webhook.
    pub fn webhook_request(&self) -> WebhookRequest {
        let request = self.request;
        WebhookRequest {
            container: WebhookContainer {
                namespace: request.namespace.clone(),
                name: request.name.clone(),
                labels: request.labels.clone(),
                cpu: request.resources.cpu,
                memory_bytes: request.resources.memory,
            },
            members: self
                .candidates
                .iter()
                .filter_map(|c| self.snapshot.members().get(c.index))
                .map(WebhookMember::from)
                .collect(),
            scores: self
                .candidates()
                .map(|(member, total)| (member.to_owned(), total))
                .collect(),
        }
    }

    /// Merges the webhook's answer: its filtered members are left out, its scores (clamped to
    /// 0..=100) added with `weight`.
    pub fn apply_webhook(&mut self, response: &WebhookResponse, weight: f64) {
        let mut kept = Vec::new();
        for mut candidate in std::mem::take(&mut self.candidates) {
            let member = self.name(candidate.index);
            if let Some(reason) = response.filtered.get(member) {
                self.filtered
                    .push((candidate.index, Reason::Text(format!("webhook: {reason}"))));
                continue;
            }
            if !response.scores.is_empty() {
                let score = response
                    .scores
                    .get(member)
                    .copied()
                    .unwrap_or(0.0)
                    .clamp(0.0, 100.0);
                candidate.total += weight * score;
            }
            kept.push(candidate);
        }
        self.candidates = kept;
    }

    /// Picks the best candidate. `rotation` seeds round-robin tie breaking (the number of
    /// decisions made so far for the cluster).
    pub fn decide(self, rotation: u64) -> Result<Decision, Unschedulable> {
        if self.candidates.is_empty() {
            return Err(Unschedulable {
                message: self.unschedulable_message(),
            });
        }
        let best = self
            .candidates
            .iter()
            .map(|c| c.total)
            .fold(f64::NEG_INFINITY, f64::max);
        // Scores within a hair of the best are ties (float noise must not decide), ordered by
        // member name.
        let mut tied: Vec<&'a str> = self
            .candidates
            .iter()
            .filter(|c| c.total >= best - 1e-9)
            .map(|c| self.name(c.index))
            .collect();
        let turn = match self.tie_break {
            TieBreak::MemberName => 0,
            TieBreak::RoundRobin => (rotation % tied.len() as u64) as usize,
        };
        // The turn-th name in order, without sorting them all.
        let (_, winner, _) = tied.select_nth_unstable(turn);
        let winner = (*winner).to_owned();
        let scores = smallest(
            self.candidates
                .iter()
                .map(|c| (self.name(c.index), c.total)),
            |a, b| b.1.total_cmp(&a.1).then_with(|| a.0.cmp(b.0)),
        )
        .into_iter()
        .map(|(member, total)| (member.to_owned(), total))
        .collect();
        let filtered = smallest(
            self.filtered
                .iter()
                .map(|(index, reason)| (self.name(*index), reason)),
            |a, b| a.0.cmp(b.0),
        )
        .into_iter()
        .map(|(member, reason)| {
            (
                member.to_owned(),
                reason.text(self.request, self.snapshot).into_owned(),
            )
        })
        .collect();
        Ok(Decision {
            member: winner.clone(),
            explanation: Explanation {
                policy: self.policy,
                winner,
                scores,
                candidates: self.candidates.len(),
                filtered,
                filtered_count: self.filtered.len(),
                notes: self.notes,
            },
        })
    }

    /// `0/3 members: 2 insufficient memory, 1 offline`.
    fn unschedulable_message(&self) -> String {
        let members = self.snapshot.members().len();
        // Equal reasons are written out once.
        let mut by_reason: HashMap<&Reason, usize> = HashMap::new();
        for (_, reason) in &self.filtered {
            *by_reason.entry(reason).or_default() += 1;
        }
        let mut counts: BTreeMap<String, usize> = BTreeMap::new();
        for (reason, n) in by_reason {
            *counts
                .entry(reason.text(self.request, self.snapshot).into_owned())
                .or_default() += n;
        }
        let mut reasons: Vec<(String, usize)> = counts.into_iter().collect();
        reasons.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        let reasons: Vec<String> = reasons
            .iter()
            .map(|(reason, n)| format!("{n} {reason}"))
            .collect();
        if reasons.is_empty() {
            format!("0/{members} members available")
        } else {
            format!("0/{members} members: {}", reasons.join(", "))
        }
    }
}

/// The first [`SHOWN`] of `items` in the order `order`, in that order: one pass, no sort of
/// them all.
fn smallest<T: Copy>(
    items: impl Iterator<Item = T>,
    order: impl Fn(&T, &T) -> std::cmp::Ordering,
) -> Vec<T> {
    let mut kept: Vec<T> = Vec::with_capacity(SHOWN + 1);
    for item in items {
        if kept.len() == SHOWN
            && kept
                .last()
                .is_some_and(|last| order(&item, last) != std::cmp::Ordering::Less)
        {
            continue;
        }
        let at = kept.partition_point(|k| order(k, &item) != std::cmp::Ordering::Greater);
        kept.insert(at, item);
        kept.truncate(SHOWN);
    }
    kept
}

/// Evaluates and decides without a webhook.
pub fn decide(
    policy: &Policy,
    request: &Request,
    snapshot: &Snapshot,
    rotation: u64,
) -> Result<Decision, Unschedulable> {
    evaluate(policy, request, snapshot).decide(rotation)
}

#[cfg(test)]
mod tests;
