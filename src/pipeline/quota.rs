//! Limits per principal (who is calling: a token's subject, or the static
//! token's label): calls per minute, calls at once, and estimated spend per
//! UTC day. Per replica and in memory, like the server-wide spend cap:
//! with N replicas a principal may get up to N times each limit (the docs
//! say so). A call without a principal (stdio, auth off) has no
//! per-principal limits; the server-wide ones still apply.
//!
//! Memory: one small entry per principal seen, at most `MAX_PRINCIPALS`
//! (a constant of the memory plan: ~2 MiB at the cap). When the table is
//! full, the entry idle longest with nothing running or held is dropped;
//! if every entry is busy, the new principal is refused as busy.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use chrono::{Datelike as _, Utc};

/// The most principals tracked at once.
pub const MAX_PRINCIPALS: usize = 10_000;

/// What one principal may do; 0 or `None` is no limit.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct QuotaSettings {
    /// Calls started per minute (a token bucket of this size, refilled
    /// evenly over the minute).
    pub calls_per_minute: u32,
    /// Calls running at once.
    pub concurrent: u32,
    /// Estimated dollars per UTC day (the price table's estimate; a call
    /// holds its worst case while it runs).
    pub daily_spend_usd: Option<f64>,
}

impl QuotaSettings {
    pub fn is_off(&self) -> bool {
        self.calls_per_minute == 0 && self.concurrent == 0 && self.daily_spend_usd.is_none()
    }
}

#[derive(Debug)]
struct Entry {
    /// Calls that may start now (token bucket).
    tokens: f64,
    refilled: Instant,
    running: u32,
    day: i64,
    spent: f64,
    held: f64,
    seen: Instant,
}

impl Entry {
    fn new(cfg: &QuotaSettings, now: Instant) -> Self {
        Self {
            tokens: f64::from(cfg.calls_per_minute),
            refilled: now,
            running: 0,
            day: today(),
            spent: 0.0,
            held: 0.0,
            seen: now,
        }
    }

    fn refill(&mut self, cfg: &QuotaSettings, now: Instant) {
        let per_sec = f64::from(cfg.calls_per_minute) / 60.0;
        let dt = now.saturating_duration_since(self.refilled).as_secs_f64();
        self.tokens = (self.tokens + dt * per_sec).min(f64::from(cfg.calls_per_minute));
        self.refilled = now;
        let d = today();
        if self.day != d {
            self.day = d;
            self.spent = 0.0;
        }
    }

    fn idle(&self) -> bool {
        self.running == 0 && self.held <= 0.0
    }
}

fn today() -> i64 {
    i64::from(Utc::now().date_naive().num_days_from_ce())
}

/// Why a principal's call was refused, in words that say when to retry.
#[derive(Debug, Clone, PartialEq)]
pub struct Refusal {
    pub message: String,
    /// When trying again may work.
    pub retry_after: Duration,
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

#[derive(Debug)]
pub struct Quotas {
    cfg: QuotaSettings,
    map: Mutex<HashMap<String, Entry>>,
}

/// A running call of a principal; dropping it ends the call.
#[derive(Debug)]
pub struct CallPass<'a> {
    quotas: &'a Quotas,
    principal: Option<String>,
}

/// A principal's spend hold for one image run; `settle` turns it into
/// what the run cost, dropping it gives the hold back.
#[derive(Debug)]
pub struct SpendPass<'a> {
    quotas: &'a Quotas,
    principal: Option<String>,
    amount: f64,
}

fn until_midnight() -> (String, Duration) {
    let now = Utc::now();
    let next = (now.date_naive() + chrono::Days::new(1))
        .and_hms_opt(0, 0, 0)
        .map(|t| t.and_utc())
        .unwrap_or(now);
    let secs = (next - now).num_seconds().max(1) as u64;
    let mins = secs.div_ceil(60);
    let words = if mins >= 60 {
        format!("{} h {} min", mins / 60, mins % 60)
    } else {
        format!("{mins} min")
    };
    (words, Duration::from_secs(secs))
}

impl Quotas {
    pub fn new(cfg: QuotaSettings) -> Self {
        Self {
            cfg,
            map: Mutex::new(HashMap::new()),
        }
    }

    pub fn settings(&self) -> &QuotaSettings {
        &self.cfg
    }

    /// Principals tracked now (for status and metrics).
    pub fn tracked(&self) -> usize {
        self.map.lock().map(|m| m.len()).unwrap_or(0)
    }

    /// Run `f` on the principal's entry, making room for it if needed.
    fn with_entry<T>(
        &self,
        principal: &str,
        f: impl FnOnce(&mut Entry) -> Result<T, Refusal>,
    ) -> Result<T, Refusal> {
        let now = Instant::now();
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        if !map.contains_key(principal) {
            if map.len() >= MAX_PRINCIPALS {
                let oldest = map
                    .iter()
                    .filter(|(_, e)| e.idle())
                    .min_by_key(|(_, e)| e.seen)
                    .map(|(k, _)| k.clone());
                match oldest {
                    Some(k) => {
                        map.remove(&k);
                    }
                    None => {
                        return Err(Refusal {
                            message: format!(
                                "server busy: {MAX_PRINCIPALS} callers have calls running on this replica; retry in a few seconds"
                            ),
                            retry_after: Duration::from_secs(5),
                        });
                    }
                }
            }
            map.insert(principal.to_string(), Entry::new(&self.cfg, now));
        }
        let e = map
            .get_mut(principal)
            .expect("inserted above while holding the lock");
        e.refill(&self.cfg, now);
        e.seen = now;
        f(e)
    }

    /// Start a call of `principal`: within its calls per minute and its
    /// calls at once, or refused with when to retry. `None` (no identity)
    /// is never limited here.
    pub fn start_call(&self, principal: Option<&str>) -> Result<CallPass<'_>, Refusal> {
        let Some(p) = principal else {
            return Ok(CallPass {
                quotas: self,
                principal: None,
            });
        };
        if self.cfg.calls_per_minute == 0 && self.cfg.concurrent == 0 {
            return Ok(CallPass {
                quotas: self,
                principal: None,
            });
        }
        let cfg = self.cfg;
        self.with_entry(p, |e| {
            if cfg.concurrent > 0 && e.running >= cfg.concurrent {
                return Err(Refusal {
                    message: format!(
                        "{} of your calls are running, the limit per caller (NANO_BANANA_PRINCIPAL_CONCURRENT_CALLS); retry when one of them has finished",
                        e.running
                    ),
                    retry_after: Duration::from_secs(5),
                });
            }
            if cfg.calls_per_minute > 0 {
                if e.tokens < 1.0 {
                    let per_sec = f64::from(cfg.calls_per_minute) / 60.0;
                    let wait = ((1.0 - e.tokens) / per_sec).ceil().max(1.0) as u64;
                    return Err(Refusal {
                        message: format!(
                            "you have made {} calls in the last minute, the limit per caller (NANO_BANANA_PRINCIPAL_CALLS_PER_MINUTE); retry in {wait} s",
                            cfg.calls_per_minute
                        ),
                        retry_after: Duration::from_secs(wait),
                    });
                }
                e.tokens -= 1.0;
            }
            e.running += 1;
            Ok(())
        })?;
        Ok(CallPass {
            quotas: self,
            principal: Some(p.to_string()),
        })
    }

    /// Hold `estimate` dollars of `principal`'s daily cap for one image
    /// run, or say why the cap refuses it and when it resets.
    pub fn hold_spend(
        &self,
        principal: Option<&str>,
        estimate: f64,
    ) -> Result<SpendPass<'_>, Refusal> {
        let (Some(p), Some(cap)) = (principal, self.cfg.daily_spend_usd) else {
            return Ok(SpendPass {
                quotas: self,
                principal: None,
                amount: 0.0,
            });
        };
        self.with_entry(p, |e| {
            if e.spent + e.held + estimate > cap {
                let (words, wait) = until_midnight();
                return Err(Refusal {
                    message: format!(
                        "your daily spend cap of ${cap:.2} is reached: ${:.2} estimated today (UTC) and ${:.2} held by your calls in progress, and this call may cost up to ${estimate:.2}. It resets at 00:00 UTC (in {words}); an operator can raise NANO_BANANA_PRINCIPAL_DAILY_SPEND_USD",
                        e.spent, e.held
                    ),
                    retry_after: wait,
                });
            }
            e.held += estimate;
            Ok(())
        })?;
        Ok(SpendPass {
            quotas: self,
            principal: Some(p.to_string()),
            amount: estimate,
        })
    }

    /// Estimated dollars `principal` spent today on this replica.
    pub fn spent_today(&self, principal: &str) -> f64 {
        let map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        map.get(principal)
            .filter(|e| e.day == today())
            .map_or(0.0, |e| e.spent)
    }

    fn release(&self, principal: &str, f: impl FnOnce(&mut Entry)) {
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(e) = map.get_mut(principal) {
            f(e);
        }
    }
}

impl Drop for CallPass<'_> {
    fn drop(&mut self) {
        if let Some(p) = self.principal.take() {
            self.quotas
                .release(&p, |e| e.running = e.running.saturating_sub(1));
        }
    }
}

impl SpendPass<'_> {
    /// The run cost `usd`: it counts for today, the hold is given back.
    pub fn settle(mut self, usd: f64) {
        if let Some(p) = self.principal.take() {
            let amount = self.amount;
            self.quotas.release(&p, |e| {
                e.held = (e.held - amount).max(0.0);
                e.spent += usd;
            });
        }
    }
}

impl Drop for SpendPass<'_> {
    fn drop(&mut self) {
        if let Some(p) = self.principal.take() {
            let amount = self.amount;
            self.quotas
                .release(&p, |e| e.held = (e.held - amount).max(0.0));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn quotas(cpm: u32, conc: u32, usd: Option<f64>) -> Quotas {
        Quotas::new(QuotaSettings {
            calls_per_minute: cpm,
            concurrent: conc,
            daily_spend_usd: usd,
        })
    }

    #[test]
    fn calls_per_minute_refuse_past_the_limit_with_a_retry_time_and_refill() {
        let q = quotas(3, 0, None);
        for _ in 0..3 {
            drop(
                q.start_call(Some("alice"))
                    .expect("within the minute's calls"),
            );
        }
        let r = q
            .start_call(Some("alice"))
            .expect_err("the fourth is refused");
        assert!(r.message.contains("3 calls in the last minute"), "{r}");
        // One call comes back every 20 s at 3 per minute.
        assert!(
            (1..=20).contains(&r.retry_after.as_secs()),
            "{:?}",
            r.retry_after
        );
        // Another principal has its own bucket.
        drop(q.start_call(Some("bob")).expect("bob is not alice"));
        // Time passes: the bucket refills.
        {
            let mut m = q.map.lock().unwrap();
            let e = m.get_mut("alice").unwrap();
            e.refilled -= Duration::from_secs(21);
        }
        drop(q.start_call(Some("alice")).expect("refilled after 20 s"));
        assert!(q.start_call(Some("alice")).is_err(), "only one came back");
    }

    #[test]
    fn concurrent_calls_are_counted_until_they_end() {
        let q = quotas(0, 2, None);
        let a = q.start_call(Some("p")).unwrap();
        let b = q.start_call(Some("p")).unwrap();
        let r = q.start_call(Some("p")).expect_err("third at once");
        assert!(r.message.contains("2 of your calls are running"), "{r}");
        drop(a);
        let c = q.start_call(Some("p")).expect("one ended");
        drop((b, c));
        assert!(q.start_call(None).is_ok(), "no identity, no limit");
    }

    #[test]
    fn daily_spend_holds_the_worst_case_and_counts_what_was_spent() {
        let q = quotas(0, 0, Some(1.0));
        let a = q.hold_spend(Some("p"), 0.6).unwrap();
        let r = q
            .hold_spend(Some("p"), 0.6)
            .expect_err("1.2 > 1.0 while a runs");
        assert!(
            r.message.contains("$1.00") && r.message.contains("00:00 UTC"),
            "{r}"
        );
        assert!(r.retry_after > Duration::ZERO);
        a.settle(0.2);
        assert!((q.spent_today("p") - 0.2).abs() < 1e-12);
        let b = q.hold_spend(Some("p"), 0.8).expect("0.2 + 0.8 fits");
        drop(b);
        assert!(
            (q.spent_today("p") - 0.2).abs() < 1e-12,
            "a dropped hold costs nothing"
        );
        assert!(
            q.hold_spend(Some("other"), 1.0).is_ok(),
            "caps are per principal"
        );
    }

    #[test]
    fn the_table_is_capped_and_drops_only_idle_principals() {
        let q = quotas(0, 1, None);
        let mut running = Vec::new();
        for i in 0..MAX_PRINCIPALS {
            running.push(q.start_call(Some(&format!("p{i}"))).unwrap());
        }
        assert_eq!(q.tracked(), MAX_PRINCIPALS);
        let r = q.start_call(Some("late")).expect_err("every entry is busy");
        assert!(r.message.contains("server busy"), "{r}");
        running.pop();
        drop(q.start_call(Some("late")).expect("an idle entry made room"));
        assert_eq!(q.tracked(), MAX_PRINCIPALS);
    }
}
