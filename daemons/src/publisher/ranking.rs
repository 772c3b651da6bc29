//! Which boxes get a file: a plain scoring function over what the entrances said
//! about each box and what this publisher measured itself, and a randomised choice
//! among the best.
//!
//! Every factor is normalised to 0..=1 so that weights read as shares; a factor the
//! publisher knows nothing about scores a neutral 0.5 rather than 0, so a new box
//! gets a fair first chance. The choice is a draw among the good boxes (those
//! within [`GOOD_ENOUGH`] of the best), each as likely as its score. Always taking
//! the single best box would send every segment of a live stream to the same
//! household — and so does keeping the better of two draws while the scores stay
//! put between heartbeats: with two good boxes the better one always won, which
//! the publisher benchmark showed as a thousand segments on one box.
//!
//! What a box says about itself costs it nothing to say, so a claim is only a
//! prior: reported spare upload and free storage never score above neutral
//! (a box saying it is busy or full loses; one claiming a gigabit gains
//! nothing), and the weight of the upload claim passes to the throughput this
//! publisher measured as its transfers succeed ([`PRIOR_TRANSFERS`]). A box
//! not yet measured — fewer than [`MEASURED_AFTER`] transfers, or no serve
//! probe answered — is *on probation*: while measured boxes are there, the
//! boxes on probation share [`PROBATION_PER_MILLE`] of the placements between
//! them, however many they are, so twenty invented identities get what one new
//! box would.

use std::cmp::Ordering;
use std::collections::HashSet;
use std::fmt;

use dandelion_core::ids::NodeId;

/// Nearness halves at this distance.
const NEAR_KM: f64 = 500.0;
/// Spare upload and throughput reach 0.5 at this many bytes per second.
const RATE_SCALE: f64 = 1_048_576.0;
/// Free storage reaches 0.5 at this many bytes.
const STORAGE_SCALE: f64 = 1_073_741_824.0;
/// Boxes scoring within this share of the best are "good" for the random draw.
const GOOD_ENOUGH: f64 = 0.8;
/// What a factor nobody measured scores, and the most a claim can score.
const NEUTRAL: f64 = 0.5;
/// Transfers whose measured throughput weigh as much as the reported upload:
/// after this many the claim counts half, after ten times as many a tenth.
pub const PRIOR_TRANSFERS: f64 = 3.0;
/// Successful transfers after which a box (that also answered a serve probe)
/// leaves probation.
pub const MEASURED_AFTER: u32 = 3;
/// The share of placements, and of viewers, that boxes on probation get
/// together while measured boxes are there: one in ten.
pub const PROBATION_PER_MILLE: usize = 100;

/// Whether a box is still on probation: too few transfers measured, or no
/// serve probe answered yet.
pub fn on_probation(transfers: u32, serve_probes_answered: u32) -> bool {
    transfers < MEASURED_AFTER || serve_probes_answered == 0
}

/// What the publisher knows about a box when it ranks it.
#[derive(Debug, Clone, PartialEq)]
pub struct Candidate {
    pub id: NodeId,
    /// Whether the entrance says the box takes new placements (active and
    /// verified, or legacy when the publisher opted in).
    pub eligible: bool,
    /// Distance to the audience, when both locations are known.
    pub distance_km: Option<f64>,
    pub upload_cap: Option<u64>,
    pub upload_rate: Option<u64>,
    /// The smaller of the box's free disk and the quota left to this publisher.
    pub storage_free: Option<u64>,
    /// Transfers to this box that this publisher saw succeed and fail recently.
    pub successes: u32,
    pub failures: u32,
    /// Throughput this publisher measured to the box, bytes per second, and
    /// how many transfers measured it.
    pub throughput: Option<f64>,
    pub throughput_samples: u32,
    /// Not yet measured ([`on_probation`]).
    pub probation: bool,
}

/// How much each factor counts.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Weights {
    pub nearness: f64,
    pub spare_upload: f64,
    pub storage: f64,
    pub reliability: f64,
    pub throughput: f64,
}

impl Default for Weights {
    fn default() -> Self {
        Weights {
            nearness: 0.30,
            spare_upload: 0.25,
            storage: 0.10,
            reliability: 0.25,
            throughput: 0.10,
        }
    }
}

/// Each factor of a score, kept so a placement can say why a box won.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Factors {
    pub nearness: f64,
    pub spare_upload: f64,
    pub storage: f64,
    pub reliability: f64,
    pub throughput: f64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Ranked {
    pub id: NodeId,
    pub score: f64,
    pub factors: Factors,
    pub probation: bool,
}

fn saturate(value: f64, scale: f64) -> f64 {
    if value <= 0.0 {
        0.0
    } else {
        value / (value + scale)
    }
}

/// Scores one box; `None` when it may not take new placements.
pub fn score(c: &Candidate, w: &Weights) -> Option<Ranked> {
    if !c.eligible {
        return None;
    }
    let nearness = c
        .distance_km
        .map_or(0.5, |d| 1.0 / (1.0 + d.max(0.0) / NEAR_KM));
    // Claims: never above neutral.
    let spare_upload = match (c.upload_cap, c.upload_rate) {
        (Some(cap), rate) if cap > 0 => {
            saturate(cap.saturating_sub(rate.unwrap_or(0)) as f64, RATE_SCALE)
        }
        _ => NEUTRAL,
    }
    .min(NEUTRAL);
    let storage = c
        .storage_free
        .map_or(NEUTRAL, |free| saturate(free as f64, STORAGE_SCALE))
        .min(NEUTRAL);
    // Laplace's rule: one failure of a new box is not a verdict.
    let reliability =
        (f64::from(c.successes) + 1.0) / (f64::from(c.successes) + f64::from(c.failures) + 2.0);
    let throughput = c.throughput.map_or(NEUTRAL, |t| saturate(t, RATE_SCALE));
    // The upload claim's weight passes to the measured throughput.
    let measured = if c.throughput.is_some() {
        f64::from(c.throughput_samples)
    } else {
        0.0
    };
    let claim_share = PRIOR_TRANSFERS / (PRIOR_TRANSFERS + measured);
    let w = Weights {
        spare_upload: w.spare_upload * claim_share,
        throughput: w.throughput + w.spare_upload * (1.0 - claim_share),
        ..*w
    };
    let factors = Factors {
        nearness,
        spare_upload,
        storage,
        reliability,
        throughput,
    };
    let total = w.nearness + w.spare_upload + w.storage + w.reliability + w.throughput;
    let weighted = w.nearness * nearness
        + w.spare_upload * spare_upload
        + w.storage * storage
        + w.reliability * reliability
        + w.throughput * throughput;
    let score = if total > 0.0 { weighted / total } else { 0.0 };
    Some(Ranked {
        id: c.id.clone(),
        score,
        factors,
        probation: c.probation,
    })
}

/// Every eligible box, best first (ties broken by ID so the order is stable).
pub fn rank(candidates: &[Candidate], w: &Weights) -> Vec<Ranked> {
    let mut ranked: Vec<Ranked> = candidates.iter().filter_map(|c| score(c, w)).collect();
    ranked.sort_by(|a, b| {
        b.score
            .partial_cmp(&a.score)
            .unwrap_or(Ordering::Equal)
            .then_with(|| a.id.cmp(&b.id))
    });
    ranked
}

/// Why a box was chosen: its score and the one it beat in the draw, or the next
/// best when there was no draw.
#[derive(Debug, Clone, PartialEq)]
pub struct Choice {
    pub chosen: Ranked,
    pub runner_up: Option<Ranked>,
    /// How many boxes were good enough to be drawn from.
    pub pool: usize,
    /// Kept because it holds the rest of the file's stream, not drawn.
    pub kept: bool,
}

impl fmt::Display for Choice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let c = &self.chosen;
        write!(
            f,
            "{} scored {:.2} (near {:.2}, spare upload {:.2}, storage {:.2}, reliability {:.2}, throughput {:.2})",
            c.id,
            c.score,
            c.factors.nearness,
            c.factors.spare_upload,
            c.factors.storage,
            c.factors.reliability,
            c.factors.throughput
        )?;
        if self.kept {
            return write!(f, "; kept: it holds the rest of the stream");
        }
        match &self.runner_up {
            Some(r) => write!(f, "; next was {} at {:.2}", r.id, r.score)?,
            None => write!(f, "; no other box was eligible")?,
        }
        write!(f, "; drawn from the {} best", self.pool)
    }
}

/// Whether one draw goes to the boxes on probation: [`PROBATION_PER_MILLE`]
/// of them do while there are measured boxes too; all do when there are none.
pub fn probation_turn(measured_left: bool, pick: &mut dyn FnMut(usize) -> usize) -> bool {
    !measured_left || pick(1000) < PROBATION_PER_MILLE
}

/// Picks `k` distinct boxes from `ranked` (best first), skipping `exclude` (boxes
/// that already hold the file or just failed it). `pick(n)` returns a random index
/// below `n`; it is a parameter so tests are deterministic. Each pick first
/// decides between the measured boxes and those on probation
/// ([`probation_turn`]), then draws within that group.
pub fn choose(
    ranked: &[Ranked],
    k: usize,
    exclude: &HashSet<NodeId>,
    pick: &mut dyn FnMut(usize) -> usize,
) -> Vec<Choice> {
    let mut chosen = Vec::new();
    while chosen.len() < k {
        let taken = |r: &&Ranked| {
            exclude.contains(&r.id) || chosen.iter().any(|c: &Choice| c.chosen.id == r.id)
        };
        let measured: Vec<&Ranked> = ranked
            .iter()
            .filter(|r| !r.probation && !taken(r))
            .collect();
        let on_probation: Vec<&Ranked> =
            ranked.iter().filter(|r| r.probation && !taken(r)).collect();
        let group = if on_probation.is_empty() {
            measured
        } else if probation_turn(!measured.is_empty(), pick) {
            on_probation
        } else {
            measured
        };
        let Some(choice) = draw(&group, pick) else {
            break;
        };
        chosen.push(choice);
    }
    chosen
}

/// [`choose`], but the boxes of `kept` that are still eligible and not
/// excluded come first, in that order, without a draw: a stream's segments
/// stay on the boxes that hold the rest of it ([`super::homes`]). The draw
/// fills what `kept` does not.
pub fn choose_keeping(
    ranked: &[Ranked],
    k: usize,
    exclude: &HashSet<NodeId>,
    kept: &[NodeId],
    pick: &mut dyn FnMut(usize) -> usize,
) -> Vec<Choice> {
    let mut chosen: Vec<Choice> = Vec::new();
    for id in kept {
        if chosen.len() >= k {
            break;
        }
        if exclude.contains(id) || chosen.iter().any(|c| c.chosen.id == *id) {
            continue;
        }
        if let Some(r) = ranked.iter().find(|r| r.id == *id) {
            chosen.push(Choice {
                chosen: r.clone(),
                runner_up: None,
                pool: 1,
                kept: true,
            });
        }
    }
    let mut taken = exclude.clone();
    taken.extend(chosen.iter().map(|c| c.chosen.id.clone()));
    let rest = choose(ranked, k - chosen.len(), &taken, pick);
    chosen.extend(rest);
    chosen
}

/// One box from `left` (best first): drawn among the good ones.
fn draw(left: &[&Ranked], pick: &mut dyn FnMut(usize) -> usize) -> Option<Choice> {
    let best = left.first()?.score;
    let pool = left
        .iter()
        .take_while(|r| r.score >= best * GOOD_ENOUGH)
        .count()
        .max(1);
    let (winner, runner_up) = if pool >= 2 {
        let winner = weighted(&left[..pool], pick);
        // The next best of the pool is what the winner was chosen over.
        (winner, Some(usize::from(winner == 0)))
    } else {
        (0, (left.len() > 1).then_some(1))
    };
    let runner_up = runner_up.and_then(|i| left.get(i)).map(|r| (*r).clone());
    Some(Choice {
        chosen: left.get(winner).map(|r| (*r).clone())?,
        runner_up,
        pool,
        kept: false,
    })
}

/// An index into `pool`, each as likely as its score.
fn weighted(pool: &[&Ranked], pick: &mut dyn FnMut(usize) -> usize) -> usize {
    const STEPS: usize = 1 << 20;
    let total: f64 = pool.iter().map(|r| r.score.max(0.0)).sum();
    if total <= 0.0 {
        return pick(pool.len()) % pool.len();
    }
    #[allow(clippy::cast_precision_loss)] // a fraction of 2^20 steps
    let mut at = (pick(STEPS) % STEPS) as f64 / STEPS as f64 * total;
    for (i, r) in pool.iter().enumerate() {
        at -= r.score.max(0.0);
        if at < 0.0 {
            return i;
        }
    }
    pool.len() - 1
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u8) -> NodeId {
        NodeId::parse(&format!("box-{:032x}", n)).unwrap()
    }

    /// A deterministic stand-in for the publisher's random draw.
    fn draws(mut seed: u64) -> impl FnMut(usize) -> usize {
        move |n| {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (seed >> 33) as usize % n
        }
    }

    fn candidate(n: u8) -> Candidate {
        Candidate {
            id: id(n),
            eligible: true,
            distance_km: None,
            upload_cap: None,
            upload_rate: None,
            storage_free: None,
            successes: 0,
            failures: 0,
            throughput: None,
            throughput_samples: 0,
            probation: false,
        }
    }

    #[test]
    fn unknown_factors_are_neutral_and_ineligible_boxes_drop_out() {
        let w = Weights::default();
        let r = score(&candidate(1), &w).unwrap();
        assert!((r.score - 0.5).abs() < 1e-9, "{r:?}");
        let mut stale = candidate(2);
        stale.eligible = false;
        assert_eq!(score(&stale, &w), None);
    }

    #[test]
    fn nearer_freer_and_more_reliable_boxes_rank_higher() {
        let w = Weights::default();
        let mut near = candidate(1);
        near.distance_km = Some(10.0);
        let mut far = candidate(2);
        far.distance_km = Some(9000.0);
        assert!(score(&near, &w).unwrap().score > score(&far, &w).unwrap().score);

        let mut busy = candidate(3);
        busy.upload_cap = Some(2_000_000);
        busy.upload_rate = Some(1_990_000);
        let mut idle = candidate(4);
        idle.upload_cap = Some(2_000_000);
        idle.upload_rate = Some(0);
        assert!(score(&idle, &w).unwrap().score > score(&busy, &w).unwrap().score);

        let mut flaky = candidate(5);
        flaky.successes = 1;
        flaky.failures = 5;
        let mut solid = candidate(6);
        solid.successes = 20;
        assert!(score(&solid, &w).unwrap().score > score(&flaky, &w).unwrap().score);

        let ranked = rank(&[far.clone(), near.clone(), flaky, solid], &w);
        assert_eq!(ranked[0].id, id(1), "{ranked:?}");
    }

    #[test]
    fn the_draw_spreads_files_over_the_good_boxes_and_never_picks_a_poor_one() {
        let w = Weights::default();
        let mut cands: Vec<Candidate> = (1..=4).map(candidate).collect();
        let mut poor = candidate(9);
        poor.successes = 0;
        poor.failures = 50;
        poor.distance_km = Some(15000.0);
        cands.push(poor);
        let ranked = rank(&cands, &w);
        let mut pick = draws(7);
        let mut counts = std::collections::HashMap::new();
        for _ in 0..400 {
            let c = choose(&ranked, 1, &HashSet::new(), &mut pick);
            *counts.entry(c[0].chosen.id.clone()).or_insert(0) += 1;
        }
        assert!(
            !counts.contains_key(&id(9)),
            "the poor box must not be drawn: {counts:?}"
        );
        assert!(
            counts.len() >= 3,
            "files spread over the equal boxes: {counts:?}"
        );
    }

    #[test]
    fn two_good_boxes_of_unequal_score_both_get_files() {
        let w = Weights::default();
        let mut better = candidate(1);
        better.successes = 5;
        let ranked = rank(&[better, candidate(2)], &w);
        assert!(ranked[0].score > ranked[1].score && ranked[1].score >= ranked[0].score * 0.8);
        let mut pick = draws(11);
        let mut to_better = 0;
        for _ in 0..400 {
            let c = &choose(&ranked, 1, &HashSet::new(), &mut pick)[0];
            if c.chosen.id == id(1) {
                to_better += 1;
            }
        }
        assert!(
            (200..360).contains(&to_better),
            "the better box gets more, not all: {to_better} of 400"
        );
    }

    #[test]
    fn replicas_are_distinct_and_exclusions_hold() {
        let w = Weights::default();
        let ranked = rank(&(1..=5).map(candidate).collect::<Vec<_>>(), &w);
        let exclude: HashSet<NodeId> = [id(1), id(2)].into();
        let mut i = 0;
        let mut pick = |n: usize| {
            i += 1;
            i % n
        };
        let chosen = choose(&ranked, 3, &exclude, &mut pick);
        let ids: HashSet<NodeId> = chosen.iter().map(|c| c.chosen.id.clone()).collect();
        assert_eq!(ids.len(), 3);
        assert!(ids.is_disjoint(&exclude));
        assert_eq!(
            choose(&ranked, 9, &exclude, &mut pick).len(),
            3,
            "no more boxes than there are"
        );
    }

    #[test]
    fn claims_never_lift_a_box_and_measurements_replace_them() {
        let w = Weights::default();
        // A new box claiming a gigabit and a petabyte scores as one claiming
        // nothing; a box saying it is busy scores lower.
        let mut boaster = candidate(1);
        boaster.upload_cap = Some(1 << 30);
        boaster.upload_rate = Some(0);
        boaster.storage_free = Some(1 << 50);
        let quiet = candidate(2);
        let boast = score(&boaster, &w).unwrap().score;
        assert!((boast - score(&quiet, &w).unwrap().score).abs() < 1e-9);
        let mut busy = candidate(3);
        busy.upload_cap = Some(1_000_000);
        busy.upload_rate = Some(1_000_000);
        assert!(score(&busy, &w).unwrap().score < boast);
        // A box that carried files well out-ranks the boaster...
        let mut proven = candidate(4);
        proven.successes = 30;
        proven.throughput = Some(8_000_000.0);
        proven.throughput_samples = 30;
        assert!(score(&proven, &w).unwrap().score > boast + 0.1);
        // ...and once measured, what it claims hardly matters: the upload claim
        // passed its weight to what was measured.
        let mut claims_little = proven.clone();
        claims_little.upload_cap = Some(100_000);
        claims_little.upload_rate = Some(90_000);
        let drop = score(&proven, &w).unwrap().score - score(&claims_little, &w).unwrap().score;
        let unmeasured_drop = score(&quiet, &w).unwrap().score - {
            let mut c = candidate(5);
            c.upload_cap = Some(100_000);
            c.upload_rate = Some(90_000);
            score(&c, &w).unwrap().score
        };
        assert!(drop < unmeasured_drop / 5.0, "{drop} vs {unmeasured_drop}");
    }

    #[test]
    fn a_stream_keeps_its_eligible_boxes_and_draws_only_the_rest() {
        let w = Weights::default();
        let ranked = rank(&(1..=5).map(candidate).collect::<Vec<_>>(), &w);
        let mut pick = draws(7);
        // Box 9 is not eligible (not ranked), box 2 already holds the file.
        let kept = [id(9), id(4), id(2), id(5)];
        let exclude: HashSet<NodeId> = [id(2)].into();
        let c = choose_keeping(&ranked, 3, &exclude, &kept, &mut pick);
        let ids: Vec<&NodeId> = c.iter().map(|c| &c.chosen.id).collect();
        assert_eq!(ids[..2], [&id(4), &id(5)]);
        assert!(c[0].kept && c[1].kept && !c[2].kept);
        assert!(![id(2), id(4), id(5)].contains(ids[2]), "{ids:?}");
        assert!(c[0].to_string().contains("holds the rest of the stream"));
        // Enough kept boxes: no draw at all.
        let c = choose_keeping(&ranked, 1, &HashSet::new(), &kept, &mut |_| unreachable!());
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].chosen.id, id(4));
    }

    #[test]
    fn boxes_on_probation_share_a_tenth_of_placements_however_many_they_are() {
        let w = Weights::default();
        let mut cands = Vec::new();
        for n in 1..=2 {
            let mut measured = candidate(n);
            measured.successes = 10;
            measured.throughput = Some(2_000_000.0);
            measured.throughput_samples = 10;
            cands.push(measured);
        }
        for n in 10..30 {
            let mut sybil = candidate(n);
            sybil.probation = true;
            sybil.upload_cap = Some(1 << 30);
            cands.push(sybil);
        }
        let ranked = rank(&cands, &w);
        let mut pick = draws(3);
        let mut to_probation = 0;
        for _ in 0..2000 {
            let c = &choose(&ranked, 1, &HashSet::new(), &mut pick)[0];
            if c.chosen.probation {
                to_probation += 1;
            }
        }
        assert!(
            (100..300).contains(&to_probation),
            "twenty boxes on probation got {to_probation} of 2000"
        );
        // Alone, boxes on probation take everything: a new network works.
        let fresh: Vec<Candidate> = cands.iter().filter(|c| c.probation).cloned().collect();
        let ranked = rank(&fresh, &w);
        assert_eq!(choose(&ranked, 2, &HashSet::new(), &mut pick).len(), 2);
        assert!(on_probation(MEASURED_AFTER - 1, 5));
        assert!(on_probation(MEASURED_AFTER, 0));
        assert!(!on_probation(MEASURED_AFTER, 1));
    }

    #[test]
    fn a_choice_explains_itself() {
        let w = Weights::default();
        let mut a = candidate(1);
        a.distance_km = Some(0.0);
        let ranked = rank(&[a, candidate(2)], &w);
        let choice = &choose(&ranked, 1, &HashSet::new(), &mut |_| 0)[0];
        let text = choice.to_string();
        assert!(text.starts_with(&format!("{} scored", id(1))), "{text}");
        assert!(text.contains(&format!("next was {}", id(2))), "{text}");
    }
}
