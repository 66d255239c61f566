//! Every algorithm sorts correctly, for every cutoff and gap sequence, on awkward inputs.

use sortbench::sort::{sort, Algorithm, Config, Gaps};

fn inputs() -> Vec<Vec<u64>> {
    let mut state = 42u64;
    let mut random = |n: usize, modulo: u64| -> Vec<u64> {
        (0..n)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                state % modulo
            })
            .collect()
    };
    vec![
        vec![],
        vec![7],
        vec![2, 1],
        vec![3, 1, 2],
        (0..1000).collect(),
        (0..1000).rev().collect(),
        vec![5; 500],
        random(3000, u64::MAX),
        random(3000, 4),
        random(777, 1000),
        vec![u64::MAX, 0, u64::MAX, 1, 0],
    ]
}

fn check(config: Config) {
    for input in inputs() {
        let mut expected = input.clone();
        expected.sort();
        let mut got = input.clone();
        sort(&mut got, &config);
        assert_eq!(got, expected, "{config:?} on {} elements", input.len());
    }
}

#[test]
fn every_algorithm_sorts() {
    for name in Algorithm::NAMES {
        let algorithm = Algorithm::from_name(name).expect("listed name");
        for cutoff in [0, 1, 2, 4, 8, 16, 32, 64, 256, 2048] {
            for gaps in Gaps::NAMES {
                check(Config {
                    algorithm,
                    cutoff,
                    gaps: Gaps::from_name(gaps).expect("listed name"),
                });
            }
        }
    }
}

#[test]
fn gap_sequences_end_with_one_and_decrease() {
    for name in Gaps::NAMES {
        let gaps = Gaps::from_name(name).expect("listed name");
        for n in [0, 1, 2, 3, 10, 1000, 200_000] {
            let seq = gaps.sequence(n);
            assert_eq!(seq.last(), Some(&1), "{name} for {n}: {seq:?}");
            assert!(
                seq.windows(2).all(|w| w[0] > w[1]),
                "{name} for {n}: {seq:?}"
            );
        }
    }
}
