//! The daily spend cap (`--daily-spend-cap-usd`): estimated dollars per
//! UTC day, per server process. A call holds its worst case
//! (`PriceTable::upper_bound`) while it runs, so calls in flight together
//! cannot pass the cap; when it ends, the hold becomes what the call
//! actually cost (nothing for a call that failed before Gemini answered).

use std::sync::Mutex;

use chrono::{Datelike as _, Utc};

#[derive(Debug, Default)]
struct Day {
    /// Days since the Unix epoch (UTC).
    day: i64,
    spent: f64,
    held: f64,
}

#[derive(Debug)]
pub struct SpendCap {
    cap_usd: Option<f64>,
    state: Mutex<Day>,
}

/// A call's share of the cap while it runs; dropped without `settle`, it
/// gives its hold back.
pub struct SpendHold<'a> {
    cap: &'a SpendCap,
    amount: f64,
}

fn today() -> i64 {
    i64::from(Utc::now().date_naive().num_days_from_ce())
}

/// "3 h 12 min" until the next 00:00 UTC.
fn until_midnight() -> String {
    let now = Utc::now();
    let next = (now.date_naive() + chrono::Days::new(1))
        .and_hms_opt(0, 0, 0)
        .map(|t| t.and_utc())
        .unwrap_or(now);
    let mins = (next - now).num_minutes().max(1);
    if mins >= 60 {
        format!("{} h {} min", mins / 60, mins % 60)
    } else {
        format!("{mins} min")
    }
}

impl SpendCap {
    pub fn new(cap_usd: Option<f64>) -> Self {
        Self {
            cap_usd,
            state: Mutex::new(Day {
                day: today(),
                ..Day::default()
            }),
        }
    }

    fn day(&self) -> std::sync::MutexGuard<'_, Day> {
        let mut d = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let now = today();
        if d.day != now {
            // A new day: what was spent is yesterday's; holds of calls
            // still running move over with them.
            d.day = now;
            d.spent = 0.0;
        }
        d
    }

    /// Hold `estimate` dollars for a call, or say why the cap refuses it.
    pub fn hold(&self, estimate: f64) -> Result<SpendHold<'_>, String> {
        let Some(cap) = self.cap_usd else {
            return Ok(SpendHold {
                cap: self,
                amount: 0.0,
            });
        };
        let mut d = self.day();
        if d.spent + d.held + estimate > cap {
            return Err(format!(
                "the daily spend cap of ${cap:.2} is reached: ${:.2} estimated today (UTC) and ${:.2} held by calls in progress, and this call may cost up to ${estimate:.2}. It resets at 00:00 UTC (in {}); an operator can raise NANO_BANANA_DAILY_SPEND_CAP_USD",
                d.spent,
                d.held,
                until_midnight()
            ));
        }
        d.held += estimate;
        Ok(SpendHold {
            cap: self,
            amount: estimate,
        })
    }

    /// Estimated dollars spent today (UTC).
    pub fn spent_today(&self) -> f64 {
        self.day().spent
    }

    pub fn cap(&self) -> Option<f64> {
        self.cap_usd
    }
}

impl SpendHold<'_> {
    /// The call cost `usd`: it counts for today, the hold is given back.
    pub fn settle(mut self, usd: f64) {
        let mut d = self.cap.day();
        d.held = (d.held - self.amount).max(0.0);
        d.spent += usd;
        self.amount = 0.0;
    }
}

impl Drop for SpendHold<'_> {
    fn drop(&mut self) {
        if self.amount > 0.0 {
            let mut d = self.cap.day();
            d.held = (d.held - self.amount).max(0.0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holds_count_until_settled_and_the_cap_refuses_past_it() {
        let cap = SpendCap::new(Some(1.0));
        let a = cap.hold(0.4).expect("first");
        let b = cap.hold(0.4).expect("second");
        let e = cap.hold(0.4).err().expect("refused: 1.2 > 1.0");
        assert!(e.contains("$1.00") && e.contains("00:00 UTC"), "{e}");
        a.settle(0.1);
        drop(b);
        assert!((cap.spent_today() - 0.1).abs() < 1e-12);
        let c = cap.hold(0.9).expect("0.1 + 0.9 fits");
        c.settle(0.9);
        assert!(cap.hold(0.01).is_err());
    }

    #[test]
    fn no_cap_still_counts_spend() {
        let cap = SpendCap::new(None);
        cap.hold(1e9).expect("no cap").settle(2.5);
        assert!((cap.spent_today() - 2.5).abs() < 1e-12);
    }
}
