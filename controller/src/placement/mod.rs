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

pub mod burst;
pub mod model;
pub mod plugins;
pub mod policy;
pub mod reservations;
pub mod selector;
pub mod webhook;

use std::collections::BTreeMap;
use std::fmt;

use lxd_operator_crds::policy::TieBreak;

use self::model::{Member, Request, Snapshot};
use self::plugins::Context;
use self::policy::Policy;
use self::webhook::{WebhookContainer, WebhookMember, WebhookRequest, WebhookResponse};

/// A member that passed the filters, with its scores.
#[derive(Debug, Clone, PartialEq)]
pub struct Candidate {
    /// Member name.
    pub member: String,
    /// Weighted sum of the scores.
    pub total: f64,
}

/// Filters and scores applied; the decision still to make.
#[derive(Debug, Clone)]
pub struct Evaluation {
    /// The policy's name.
    pub policy: String,
    /// Members that passed, in snapshot order.
    pub candidates: Vec<Candidate>,
    /// Members left out: (member, reason).
    pub filtered: Vec<(String, String)>,
    tie_break: TieBreak,
    member_count: usize,
}

/// The decision.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    /// The chosen member.
    pub member: String,
    /// Why.
    pub explanation: Explanation,
}

/// Why a member was chosen: its score beside the others', and why the rest were left out.
#[derive(Debug, Clone, PartialEq)]
pub struct Explanation {
    /// The policy or strategy.
    pub policy: String,
    /// The winner.
    pub winner: String,
    /// Every candidate's weighted score, in snapshot order.
    pub scores: Vec<(String, f64)>,
    /// Members left out, with the reason.
    pub filtered: Vec<(String, String)>,
}

/// Candidates shown in the short explanation; the status has no room for a thousand members.
const SHOWN: usize = 5;

impl fmt::Display for Explanation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut best: Vec<&(String, f64)> = self.scores.iter().collect();
        best.sort_by(|a, b| b.1.total_cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        let mut shown: Vec<String> = best
            .iter()
            .take(SHOWN)
            .map(|(m, s)| format!("{m} {s:.1}"))
            .collect();
        if best.len() > SHOWN {
            shown.push(format!("{} more", best.len() - SHOWN));
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
                .take(SHOWN)
                .map(|(m, r)| format!("{m}: {r}"))
                .collect();
            write!(f, "; left out: {}", filtered.join(", "))?;
            if self.filtered.len() > SHOWN {
                write!(f, " and {} more", self.filtered.len() - SHOWN)?;
            }
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
pub fn evaluate(policy: &Policy, request: &Request, snapshot: &Snapshot) -> Evaluation {
    let context = Context {
        request,
        snapshot,
        overcommit: policy.overcommit,
    };
    // Members stay in snapshot order: sorting them by name would make every decision
    // O(n log n); names only order ties and explanations.
    let mut passed: Vec<&Member> = Vec::with_capacity(snapshot.members.len());
    let mut filtered = Vec::new();
    for member in &snapshot.members {
        match policy
            .filters
            .iter()
            .find_map(|filter| filter.filter(&context, member))
        {
            Some(reason) => filtered.push((member.name.clone(), reason)),
            None => passed.push(member),
        }
    }
    filtered.sort();
    let per_scorer: Vec<Vec<f64>> = policy
        .scorers
        .iter()
        .map(|(scorer, _)| scorer.score(&context, &passed))
        .collect();
    let candidates = passed
        .iter()
        .enumerate()
        .map(|(index, member)| {
            let total = policy
                .scorers
                .iter()
                .zip(&per_scorer)
                .map(|((_, weight), s)| weight * s[index])
                .sum();
            Candidate {
                member: member.name.clone(),
                total,
            }
        })
        .collect();
    Evaluation {
        policy: policy.name.clone(),
        candidates,
        filtered,
        tie_break: policy.tie_break,
        member_count: snapshot.members.len(),
    }
}

impl Evaluation {
    /// What to send to the policy's webhook.
    pub fn webhook_request(&self, request: &Request, snapshot: &Snapshot) -> WebhookRequest {
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
                .filter_map(|c| snapshot.member(&c.member))
                .map(WebhookMember::from)
                .collect(),
            scores: self
                .candidates
                .iter()
                .map(|c| (c.member.clone(), c.total))
                .collect(),
        }
    }

    /// Merges the webhook's answer: its filtered members are left out, its scores (clamped to
    /// 0..=100) added with `weight`.
    pub fn apply_webhook(&mut self, response: &WebhookResponse, weight: f64) {
        let mut kept = Vec::new();
        for mut candidate in std::mem::take(&mut self.candidates) {
            if let Some(reason) = response.filtered.get(&candidate.member) {
                self.filtered
                    .push((candidate.member, format!("webhook: {reason}")));
                continue;
            }
            if !response.scores.is_empty() {
                let score = response
                    .scores
                    .get(&candidate.member)
                    .copied()
                    .unwrap_or(0.0)
                    .clamp(0.0, 100.0);
                candidate.total += weight * score;
            }
            kept.push(candidate);
        }
        self.candidates = kept;
        self.filtered.sort();
    }

    /// Picks the best candidate. `rotation` seeds round-robin tie breaking (the number of
    /// decisions made so far for the cluster).
    pub fn decide(self, rotation: u64) -> Result<Decision, Unschedulable> {
        if self.candidates.is_empty() {
            return Err(Unschedulable {
                message: unschedulable_message(self.member_count, &self.filtered),
            });
        }
        let best = self
            .candidates
            .iter()
            .map(|c| c.total)
            .fold(f64::NEG_INFINITY, f64::max);
        // Scores within a hair of the best are ties (float noise must not decide), ordered by
        // member name.
        let mut tied: Vec<&Candidate> = self
            .candidates
            .iter()
            .filter(|c| c.total >= best - 1e-9)
            .collect();
        tied.sort_by(|a, b| a.member.cmp(&b.member));
        let winner = match self.tie_break {
            TieBreak::MemberName => tied[0],
            TieBreak::RoundRobin => tied[(rotation % tied.len() as u64) as usize],
        }
        .member
        .clone();
        let scores: Vec<(String, f64)> = self
            .candidates
            .into_iter()
            .map(|c| (c.member, c.total))
            .collect();
        Ok(Decision {
            member: winner.clone(),
            explanation: Explanation {
                policy: self.policy,
                winner,
                scores,
                filtered: self.filtered,
            },
        })
    }
}

/// `0/3 members: 2 insufficient memory, 1 offline`.
fn unschedulable_message(members: usize, filtered: &[(String, String)]) -> String {
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for (_, reason) in filtered {
        *counts.entry(reason.as_str()).or_default() += 1;
    }
    let mut reasons: Vec<(&str, usize)> = counts.into_iter().collect();
    reasons.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(b.0)));
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
