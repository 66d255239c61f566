//! Sorting algorithms and the configuration that picks one.

/// Which algorithm sorts the data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algorithm {
    /// Quicksort (median of three) that finishes slices shorter than `cutoff` with insertion sort.
    InsertionHybrid,
    /// Top-down merge sort that sorts runs shorter than `cutoff` with insertion sort.
    Merge,
    /// Shell sort with the configured gap sequence.
    Shell,
    /// Binary heap sort.
    Heap,
    /// The standard library's `sort_unstable`.
    Std,
}

impl Algorithm {
    pub const NAMES: [&'static str; 5] = ["insertion-hybrid", "merge", "shell", "heap", "std"];

    pub fn from_name(name: &str) -> Option<Algorithm> {
        Some(match name {
            "insertion-hybrid" => Algorithm::InsertionHybrid,
            "merge" => Algorithm::Merge,
            "shell" => Algorithm::Shell,
            "heap" => Algorithm::Heap,
            "std" => Algorithm::Std,
            _ => return None,
        })
    }
}

/// Gap sequences for shell sort.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gaps {
    /// Shell's original n/2, n/4, ..., 1.
    Shell,
    /// Knuth's 1, 4, 13, 40, ... (3h + 1).
    Knuth,
    /// Ciura's empirical 1, 4, 10, 23, 57, 132, 301, 701, then x2.25.
    Ciura,
}

impl Gaps {
    pub const NAMES: [&'static str; 3] = ["shell", "knuth", "ciura"];

    pub fn from_name(name: &str) -> Option<Gaps> {
        Some(match name {
            "shell" => Gaps::Shell,
            "knuth" => Gaps::Knuth,
            "ciura" => Gaps::Ciura,
            _ => return None,
        })
    }

    /// The gaps for a slice of `n` elements, largest first, ending with 1.
    pub fn sequence(self, n: usize) -> Vec<usize> {
        let mut gaps = Vec::new();
        match self {
            Gaps::Shell => {
                let mut g = n / 2;
                while g > 0 {
                    gaps.push(g);
                    g /= 2;
                }
            }
            Gaps::Knuth => {
                let mut g = 1;
                while g < n.max(2) {
                    gaps.push(g);
                    g = 3 * g + 1;
                }
                gaps.reverse();
            }
            Gaps::Ciura => {
                let mut g = 1;
                for c in [1, 4, 10, 23, 57, 132, 301, 701] {
                    if c >= n.max(2) {
                        break;
                    }
                    gaps.push(c);
                    g = c;
                }
                loop {
                    g = g * 9 / 4;
                    if g >= n {
                        break;
                    }
                    gaps.push(g);
                }
                gaps.reverse();
            }
        }
        if gaps.last() != Some(&1) {
            gaps.push(1);
        }
        gaps
    }
}

/// Everything that decides how [`sort`] works.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Config {
    pub algorithm: Algorithm,
    /// Slices shorter than this are finished with insertion sort (insertion-hybrid and merge).
    pub cutoff: usize,
    /// Gap sequence (shell).
    pub gaps: Gaps,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            algorithm: Algorithm::Std,
            cutoff: 16,
            gaps: Gaps::Ciura,
        }
    }
}

/// Sort `data` ascending as `config` says.
pub fn sort(data: &mut [u64], config: &Config) {
    let cutoff = config.cutoff.max(2);
    match config.algorithm {
        Algorithm::InsertionHybrid => quick_sort(data, cutoff),
        Algorithm::Merge => {
            let mut buf = data.to_vec();
            merge_sort(data, &mut buf, cutoff);
        }
        Algorithm::Shell => shell_sort(data, &config.gaps.sequence(data.len())),
        Algorithm::Heap => heap_sort(data),
        Algorithm::Std => data.sort_unstable(),
    }
}

pub fn insertion_sort(a: &mut [u64]) {
    for i in 1..a.len() {
        let x = a[i];
        let mut j = i;
        while j > 0 && a[j - 1] > x {
            a[j] = a[j - 1];
            j -= 1;
        }
        a[j] = x;
    }
}

fn quick_sort(mut a: &mut [u64], cutoff: usize) {
    while a.len() > cutoff {
        let p = partition(a);
        // Recurse into the smaller side, loop on the larger: O(log n) stack.
        let (left, right) = a.split_at_mut(p);
        if left.len() < right.len() {
            quick_sort(left, cutoff);
            a = right;
        } else {
            quick_sort(right, cutoff);
            a = left;
        }
    }
    insertion_sort(a);
}

/// Hoare partition around the median of three; returns the split point (both sides non-empty).
fn partition(a: &mut [u64]) -> usize {
    let (lo, mid, hi) = (0, a.len() / 2, a.len() - 1);
    if a[mid] < a[lo] {
        a.swap(mid, lo);
    }
    if a[hi] < a[lo] {
        a.swap(hi, lo);
    }
    if a[hi] < a[mid] {
        a.swap(hi, mid);
    }
    let pivot = a[mid];
    let (mut i, mut j) = (0usize, a.len() - 1);
    loop {
        while a[i] < pivot {
            i += 1;
        }
        while a[j] > pivot {
            j -= 1;
        }
        if i >= j {
            return j + 1;
        }
        a.swap(i, j);
        i += 1;
        j -= 1;
    }
}

fn merge_sort(a: &mut [u64], buf: &mut [u64], cutoff: usize) {
    let n = a.len();
    if n <= cutoff {
        insertion_sort(a);
        return;
    }
    let mid = n / 2;
    {
        let (al, ar) = a.split_at_mut(mid);
        let (bl, br) = buf.split_at_mut(mid);
        merge_sort(al, bl, cutoff);
        merge_sort(ar, br, cutoff);
    }
    if a[mid - 1] <= a[mid] {
        return;
    }
    let (mut i, mut j, mut k) = (0, mid, 0);
    while i < mid && j < n {
        if a[j] < a[i] {
            buf[k] = a[j];
            j += 1;
        } else {
            buf[k] = a[i];
            i += 1;
        }
        k += 1;
    }
    buf[k..k + mid - i].copy_from_slice(&a[i..mid]);
    k += mid - i;
    buf[k..k + n - j].copy_from_slice(&a[j..n]);
    a.copy_from_slice(&buf[..n]);
}

fn shell_sort(a: &mut [u64], gaps: &[usize]) {
    for &gap in gaps {
        for i in gap..a.len() {
            let x = a[i];
            let mut j = i;
            while j >= gap && a[j - gap] > x {
                a[j] = a[j - gap];
                j -= gap;
            }
            a[j] = x;
        }
    }
}

fn heap_sort(a: &mut [u64]) {
    fn sift_down(a: &mut [u64], mut root: usize, end: usize) {
        loop {
            let mut child = 2 * root + 1;
            if child >= end {
                return;
            }
            if child + 1 < end && a[child] < a[child + 1] {
                child += 1;
            }
            if a[root] >= a[child] {
                return;
            }
            a.swap(root, child);
            root = child;
        }
    }
    let n = a.len();
    for i in (0..n / 2).rev() {
        sift_down(a, i, n);
    }
    for end in (1..n).rev() {
        a.swap(0, end);
        sift_down(a, 0, end);
    }
}
