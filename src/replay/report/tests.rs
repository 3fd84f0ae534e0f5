use super::*;

const MIB: u64 = 1 << 20;

fn sample(t: f64, phase: Phase, rss_mib: u64, health_ok: bool) -> Sample {
    Sample {
        t,
        phase,
        rss: Some(rss_mib * MIB),
        pending: Some(0.0),
        overload: Some(0.0),
        health_ok,
        rates: [[0.0; 2]; KINDS],
    }
}

/// 1 s per phase at 10 samples/s; RSS per phase from `rss`.
fn timeline(rss: [u64; 6], down_at: &[usize]) -> Vec<Sample> {
    let mut out = Vec::new();
    for (p, phase) in Phase::ALL.iter().enumerate() {
        for i in 0..10 {
            let n = p * 10 + i;
            out.push(sample(
                n as f64 / 10.0,
                *phase,
                rss[p],
                !down_at.contains(&n),
            ));
        }
    }
    out
}

fn good_phases() -> Vec<PhaseStats> {
    let mut p = vec![PhaseStats::default(); Phase::ALL.len()];
    for phase in Phase::LOADED {
        let s = &mut p[phase.index()];
        s.kinds[Kind::Api as usize] = KindStats {
            ok: 1000,
            err: 5,
            lat_us: (1..=1000).collect(),
            reasons: [(503, 4), (0, 1)].into(),
        };
        s.kinds[Kind::Dhcp as usize] = KindStats {
            ok: 100,
            err: 0,
            lat_us: vec![2000; 100],
            ..KindStats::default()
        };
    }
    p
}

fn targets() -> Targets {
    Targets {
        budget: 128 * MIB,
        legit_min: 0.99,
        recovery_max: Duration::from_secs(5),
    }
}

#[test]
fn percentile_is_nearest_rank() {
    let v: Vec<u32> = (1..=100).rev().collect();
    assert_eq!(percentile(&v, 0.99), Some(99));
    assert_eq!(percentile(&v, 0.5), Some(50));
    assert_eq!(percentile(&v, 1.0), Some(100));
    assert_eq!(percentile(&[7], 0.99), Some(7));
    assert_eq!(percentile(&[], 0.99), None);
}

#[test]
fn all_good_passes_every_line() {
    let s = timeline([20, 30, 40, 90, 100, 42], &[]);
    let lines = verdict(&s, &good_phases(), &targets(), None);
    assert!(lines.iter().all(|l| l.pass), "{}", render_verdict(&lines));
    assert_eq!(peak_rss(&s), Some(100 * MIB));
    assert_eq!(pre_flood_rss(&s), Some(40 * MIB));
    assert_eq!(recovery_secs(&s, 40 * MIB), Some(0.0));
}

#[test]
fn over_budget_down_slow_recovery_and_kill_fail() {
    let s = timeline([20, 30, 40, 200, 300, 300], &[31, 32, 33]);
    let lines = verdict(&s, &good_phases(), &targets(), Some("killed at RSS cap"));
    let failed: Vec<&str> = lines
        .iter()
        .filter(|l| !l.pass)
        .map(|l| l.what.as_str())
        .collect();
    assert_eq!(failed.len(), 4, "{failed:?}");
    assert!(failed[0].starts_with("target survived"));
    assert!(failed[1].starts_with("peak RSS"));
    assert!(failed[2].starts_with("unavailable"));
    assert!(failed[3].starts_with("RSS back"));
    assert!((unavailable_secs(&s) - 0.3).abs() < 1e-9);
}

#[test]
fn recovery_counts_from_tail_start() {
    let mut s = timeline([20, 30, 40, 90, 100, 100], &[]);
    for x in s.iter_mut().filter(|x| x.phase == Phase::Tail).skip(3) {
        x.rss = Some(44 * MIB); // within 10 % of 40
    }
    let r = recovery_secs(&s, 40 * MIB).expect("recovers");
    assert!((r - 0.3).abs() < 1e-9);
}

#[test]
fn legit_below_99_percent_fails_and_empty_phase_fails() {
    let mut p = good_phases();
    p[Phase::Flood.index()].kinds[Kind::Dhcp as usize].err = 2; // 100 of 102
    p[Phase::Finale.index()].kinds[Kind::Api as usize] = KindStats::default();
    let s = timeline([20, 30, 40, 40, 40, 40], &[]);
    let lines = verdict(&s, &p, &targets(), None);
    let failed: Vec<&str> = lines
        .iter()
        .filter(|l| !l.pass)
        .map(|l| l.what.as_str())
        .collect();
    assert_eq!(
        failed,
        [
            "legit DHCP success, dhcp-flood",
            "legit API success, finale"
        ]
    );
}

#[test]
fn csv_has_a_header_and_one_row_per_sample() {
    let mut s = timeline([20, 30, 40, 90, 100, 42], &[0]);
    s[0].rss = None;
    s[0].rates[Kind::Api as usize] = [1990.0, 10.0];
    let text = csv(&s);
    let rows: Vec<&str> = text.lines().collect();
    assert_eq!(rows.len(), 61);
    assert_eq!(rows[0], CSV_HEADER);
    assert_eq!(
        rows[1],
        "0.00,idle,,0,0,0,1990.0,10.0,0.0,0.0,0.0,0.0,0.0,0.0,0.0"
    );
    assert!(rows[2].starts_with("0.10,idle,20971520,0,0,1,"));
    let cols = CSV_HEADER.split(',').count();
    assert!(rows.iter().all(|r| r.split(',').count() == cols));
}

#[test]
fn tables_render() {
    let lines = verdict(&timeline([1; 6], &[]), &good_phases(), &targets(), None);
    let t = render_verdict(&lines);
    assert!(t.contains("legit API success, steady"));
    assert!(t.contains("99.50 % of 1005 (p99 1.0 ms)"));
    assert!(phase_table(&good_phases()).contains("dhcp-flood"));
    let table = phase_table(&good_phases());
    assert!(table.contains("api errors: timeout x1, 503 x4"), "{table}");
    let s = summary(&timeline([20, 30, 40, 90, 100, 42], &[]));
    assert!(s.starts_with("RSS idle 20.0 MiB, pre-flood 40.0 MiB, peak 100.0 MiB at 4.0 s (finale), end 42.0 MiB;"), "{s}");
    assert!(summary(&[]).contains("peak unknown"));
}
