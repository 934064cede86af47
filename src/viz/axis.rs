//! Axis ranges and "nice" tick values (steps of 1, 2 or 5 times a power of ten) for the charts.

/// A tick step `m · 10^e` with `m ∈ {1, 2, 5}`.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Step {
    m: f64,
    e: i32,
}

impl Step {
    /// The smallest 1-2-5 step that cuts `span` into at most `target` intervals.
    fn nice(span: f64, target: usize) -> Step {
        let raw = span / target.max(1) as f64;
        let e = raw.log10().floor() as i32;
        let f = raw / 10f64.powi(e);
        match f {
            f if f <= 1.0 => Step { m: 1.0, e },
            f if f <= 2.0 => Step { m: 2.0, e },
            f if f <= 5.0 => Step { m: 5.0, e },
            _ => Step { m: 1.0, e: e + 1 },
        }
    }

    fn value(self) -> f64 {
        self.m * 10f64.powi(self.e)
    }

    /// Decimals that show every multiple of the step exactly.
    fn decimals(self) -> usize {
        (-self.e).max(0) as usize
    }
}

/// One axis: the range it spans, its ticks `k · step` for `k` in `k_lo..=k_hi`, and how its
/// labels are printed.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Axis {
    /// The value at the start of the axis.
    pub lo: f64,
    /// The value at the end of the axis (`> lo`).
    pub hi: f64,
    step: Step,
    k_lo: i64,
    k_hi: i64,
}

impl Axis {
    /// The ticks: `(value, label)` pairs from low to high.
    pub fn ticks(&self) -> Vec<(f64, String)> {
        let (s, d) = (self.step.value(), self.step.decimals());
        (self.k_lo..=self.k_hi)
            .map(|k| {
                let v = k as f64 * s;
                (v, format!("{v:.d$}"))
            })
            .collect()
    }

    /// Where `v` falls along the axis, `0` at `lo` and `1` at `hi`.
    pub fn frac(&self, v: f64) -> f64 {
        (v - self.lo) / (self.hi - self.lo)
    }

    /// A value axis (the y axis of a chart) for data from `min` to `max`.
    ///
    /// The rule: the axis starts at 0 when every value is ≥ 0 and the smallest is at most half
    /// the largest, or when there is a single distinct value (and ends at 0 for the mirror
    /// case of values ≤ 0); otherwise the data are far from 0 for their spread, and the axis
    /// starts 5 % of the spread below the smallest value. The other end gets the same 5 %
    /// headroom. Both ends are then rounded out to a multiple of the tick step (1-2-5, about 5
    /// intervals), so the frame's top and bottom lines are labelled ticks.
    pub fn values(min: f64, max: f64) -> Axis {
        let (min, max) = if min.is_finite() && max.is_finite() && min <= max {
            (min, max)
        } else {
            (0.0, 1.0)
        };
        let single = min == max;
        let zero_lo = min >= 0.0 && (single || min <= max / 2.0);
        let zero_hi = max <= 0.0 && (single || max >= min / 2.0);
        let (mut lo, mut hi) = (
            if zero_lo { 0.0 } else { min },
            if zero_hi { 0.0 } else { max },
        );
        if lo == hi {
            // all values are 0
            hi = 1.0;
        }
        let pad = 0.05 * (hi - lo);
        if !zero_lo {
            lo -= pad;
        }
        if !zero_hi {
            hi += pad;
        }
        let step = Step::nice(hi - lo, 5);
        let s = step.value();
        let (k_lo, k_hi) = ((lo / s).floor() as i64, (hi / s).ceil() as i64);
        Axis {
            lo: k_lo as f64 * s,
            hi: k_hi as f64 * s,
            step,
            k_lo,
            k_hi,
        }
    }

    /// A position axis (the x axis of a chart: epochs, steps) for data from `min` to `max`: the
    /// data range with 3 % margins on each side (a single value sits in the middle of a range
    /// of 2, or of 2·|value|/10 when that is larger), ticks at the 1-2-5 multiples inside it
    /// (about 6 intervals), and no step below 1 when `integers` (every x is a whole number).
    pub fn positions(min: f64, max: f64, integers: bool) -> Axis {
        let (min, max) = if min.is_finite() && max.is_finite() && min <= max {
            (min, max)
        } else {
            (0.0, 1.0)
        };
        let (lo, hi) = if min == max {
            let half = (min.abs() / 10.0).max(1.0);
            (min - half, max + half)
        } else {
            let margin = 0.03 * (max - min);
            (min - margin, max + margin)
        };
        let mut step = Step::nice(hi - lo, 6);
        if integers && step.e < 0 {
            step = Step { m: 1.0, e: 0 };
        }
        let s = step.value();
        let eps = 1e-9;
        Axis {
            lo,
            hi,
            step,
            k_lo: (lo / s - eps).ceil() as i64,
            k_hi: (hi / s + eps).floor() as i64,
        }
    }
}
