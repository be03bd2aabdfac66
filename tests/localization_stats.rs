//! Localization statistics that can carry a claim: the paired bootstrap of the explanation
//! map minus each baseline (same images resampled for both, seeded), overall and per body part,
//! on per-image scores whose differences are known by construction.

use fracture::dataset::annotations::BoundingBox;
use fracture::metrics::localization::{
    score_image, BaselineDifferences, BaselineMap, ImageLocalization, MapScores,
};
use fracture::metrics::{BootstrapConfig, LocalizationConfig, LocalizationReport};

fn scores(pointing: f64, energy: f64, iou_hit: bool) -> MapScores {
    MapScores {
        pointing,
        energy,
        best_iou: if iou_hit { 0.6 } else { 0.1 },
        iou_hit,
    }
}

fn image(i: usize, map: MapScores, gaussian: MapScores, uniform: MapScores) -> ImageLocalization {
    ImageLocalization {
        path: format!("images/{i}.jpg").into(),
        body_part: None,
        boxes: 1,
        map,
        centred_gaussian: gaussian,
        uniform,
    }
}

fn config(seed: u64) -> LocalizationConfig {
    LocalizationConfig {
        bootstrap: BootstrapConfig {
            n_resamples: 400,
            confidence: 0.95,
            seed,
        },
        ..LocalizationConfig::default()
    }
}

#[test]
fn a_map_identical_to_the_gaussian_differs_from_it_by_exactly_zero() {
    // Real scoring: the "explanation" is the centred Gaussian itself, on 12 images with boxes
    // placed by a fixed rule (some central, some at the edge).
    let config = config(3);
    let images: Vec<ImageLocalization> = (0..12)
        .map(|i| {
            let (height, width) = (40 + i, 60 - i);
            let x = (i * 7 % 40) as f64;
            let y = (i * 11 % 30) as f64;
            let boxes = [BoundingBox::new(x, y, x + 12.0, y + 9.0)];
            let gaussian = BaselineMap::CentredGaussian.map(height, width, config.baseline_sigma);
            score_image(format!("{i}.jpg").into(), &gaussian, &boxes, 3.0, &config).unwrap()
        })
        .collect();
    let d = BaselineDifferences::of(&images, config.bootstrap).unwrap();
    for (name, interval) in d.centred_gaussian.rows() {
        assert_eq!(
            (interval.estimate, interval.lower, interval.upper),
            (0.0, 0.0, 0.0),
            "{name}"
        );
    }
    // Against the uniform map it is not zero on these images (a check that the test can fail).
    let energy = d.uniform.energy_pointing_game;
    assert!(energy.estimate != 0.0 && energy.lower <= energy.estimate);
}

/// Eight images: the map always hits with energy 3/4; the Gaussian hits images 0 and 4 with
/// energy 1/2; the uniform map never hits, energy 1/4 on even images and 1/2 on odd ones.
fn always_hitting() -> Vec<ImageLocalization> {
    (0..8)
        .map(|i| {
            let gaussian_hits = i % 4 == 0;
            image(
                i,
                scores(1.0, 0.75, true),
                scores(f64::from(u8::from(gaussian_hits)), 0.5, gaussian_hits),
                scores(0.0, if i % 2 == 0 { 0.25 } else { 0.5 }, false),
            )
        })
        .collect()
}

#[test]
fn a_map_that_always_hits_beats_the_baselines_by_their_miss_rate() {
    let d = BaselineDifferences::of(&always_hitting(), config(11).bootstrap).unwrap();
    let g = &d.centred_gaussian;
    assert_eq!(g.pointing_game.estimate, 0.75); // 1 − 2/8
    assert_eq!(g.box_iou_hit_rate.estimate, 0.75);
    // Energy: 3/4 − 1/2 on every image, so every resample gives 1/4.
    let e = g.energy_pointing_game;
    assert_eq!((e.lower, e.estimate, e.upper), (0.25, 0.25, 0.25));
    let u = &d.uniform;
    let p = u.pointing_game;
    assert_eq!((p.lower, p.estimate, p.upper), (1.0, 1.0, 1.0));
    assert_eq!(u.energy_pointing_game.estimate, 0.375); // 3/4 − (1/4 + 1/2) / 2
                                                        // The Gaussian's hits vary between resamples: a real interval, inside what can happen.
    let p = g.pointing_game;
    assert!(
        0.0 <= p.lower && p.lower < 0.75 && 0.75 < p.upper && p.upper <= 1.0,
        "{p:?}"
    );
    assert_eq!(p.resamples_used, 400);
}

#[test]
fn the_map_and_the_baseline_are_resampled_on_the_same_images() {
    // The baseline's energy swings from 0 to 3/4 between images and the map's is always 1/4
    // higher: resampled together the difference is 1/4 in every resample, resampled apart it
    // would swing by as much as the scores do.
    let images: Vec<ImageLocalization> = (0..20)
        .map(|i| {
            let baseline = [0.0, 0.25, 0.5, 0.75][i % 4];
            image(
                i,
                scores(0.0, baseline + 0.25, false),
                scores(0.0, baseline, false),
                scores(0.0, baseline, false),
            )
        })
        .collect();
    let d = BaselineDifferences::of(&images, config(2).bootstrap).unwrap();
    for e in [
        d.centred_gaussian.energy_pointing_game,
        d.uniform.energy_pointing_game,
    ] {
        assert_eq!((e.lower, e.estimate, e.upper), (0.25, 0.25, 0.25));
    }
}

#[test]
fn the_difference_intervals_are_seeded() {
    // Forty images whose energies differ from image to image.
    let images: Vec<ImageLocalization> = (0..40)
        .map(|i| {
            let energy = |k: usize| (i * k % 17) as f64 / 17.0;
            image(
                i,
                scores(0.0, energy(7), false),
                scores(0.0, energy(3), false),
                scores(0.0, energy(5), false),
            )
        })
        .collect();
    let first = BaselineDifferences::of(&images, config(4).bootstrap).unwrap();
    assert_eq!(
        first,
        BaselineDifferences::of(&images, config(4).bootstrap).unwrap()
    );
    assert_ne!(
        first,
        BaselineDifferences::of(&images, config(5).bootstrap).unwrap()
    );
}

#[test]
fn differences_are_given_per_body_part_and_printed_as_the_evaluation_prints_them() {
    // Hands: the map hits, the Gaussian misses. Legs: the map is the Gaussian.
    let mut images = Vec::new();
    for i in 0..6 {
        let mut hand = image(
            i,
            scores(1.0, 0.5, true),
            scores(0.0, 0.5, false),
            scores(0.0, 0.5, false),
        );
        hand.body_part = Some("hand".into());
        images.push(hand);
        let same = scores(if i % 2 == 0 { 1.0 } else { 0.0 }, 0.25, false);
        let mut leg = image(10 + i, same, same, scores(0.0, 0.25, false));
        leg.body_part = Some("leg".into());
        images.push(leg);
    }
    let mut unknown = image(
        99,
        scores(1.0, 0.5, true),
        scores(1.0, 0.5, true),
        scores(0.0, 0.5, false),
    );
    unknown.body_part = None;
    images.push(unknown);
    let report =
        LocalizationReport::new("test map", config(8), images, Vec::new(), Vec::new()).unwrap();
    let parts: Vec<(&str, usize)> = report
        .by_body_part
        .iter()
        .map(|(part, p)| (part.as_str(), p.images))
        .collect();
    assert_eq!(parts, [("hand", 6), ("leg", 6), ("unknown", 1)]);
    let hand = &report.by_body_part["hand"];
    let p = hand.differences.centred_gaussian.pointing_game;
    assert_eq!((p.lower, p.estimate, p.upper), (1.0, 1.0, 1.0));
    assert_eq!(hand.map.pointing_game.estimate, 1.0);
    let leg = &report.by_body_part["leg"].differences.centred_gaussian;
    for (name, interval) in leg.rows() {
        assert_eq!(
            (interval.lower, interval.estimate, interval.upper),
            (0.0, 0.0, 0.0),
            "{name}"
        );
    }
    assert_eq!(
        report.by_body_part["leg"]
            .differences
            .uniform
            .pointing_game
            .estimate,
        0.5
    );
    // Overall: hands 6 × 1, legs 6 × 0, the unknown image 0, over 13 images.
    let overall = report.differences.centred_gaussian.pointing_game;
    assert_eq!(overall.estimate, 6.0 / 13.0);

    let text = report.to_string();
    let line = text
        .lines()
        .find(|l| l.starts_with("pointing game minus centred Gaussian: "))
        .unwrap_or_else(|| panic!("no pointing-game line in\n{text}"));
    assert_eq!(
        line,
        format!(
            "pointing game minus centred Gaussian: 0.462 (95% CI {:.3} to {:.3})",
            overall.lower, overall.upper
        )
    );
    for statistic in ["pointing game", "energy in boxes", "box IoU hit rate"] {
        for baseline in ["centred Gaussian", "uniform"] {
            let prefix = format!("{statistic} minus {baseline}: ");
            assert_eq!(
                text.lines().filter(|l| l.starts_with(&prefix)).count(),
                1,
                "{prefix} in\n{text}"
            );
        }
    }
    assert!(
        text.contains("  hand, 6 images, pointing game: 1.000"),
        "{text}"
    );
}

#[test]
fn without_body_parts_there_is_no_per_part_table() {
    let report = LocalizationReport::new(
        "test map",
        config(1),
        always_hitting(),
        Vec::new(),
        Vec::new(),
    )
    .unwrap();
    assert!(report.by_body_part.is_empty());
    assert!(!report.to_string().contains("by body part"));
    assert!(BaselineDifferences::of(&[], config(1).bootstrap).is_err());
}
