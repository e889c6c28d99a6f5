//! One retry policy for every network request: a failure is either transient (a dropped
//! connection, HTTP 5xx, 408, 429), tried again after a pause that doubles each time up to a
//! ceiling, each retry reported; or fatal (refused credentials, not found, wrong content),
//! which ends the request at once. Each caller sorts its own client's errors into the two.

#[cfg(feature = "tokio")]
use std::fmt::Display;
#[cfg(feature = "tokio")]
use std::future::Future;
use std::time::Duration;

/// Why an attempt failed. `T` is what a transient failure carries (its reason, or the error
/// itself when the caller wants it back after the last attempt).
#[derive(Debug)]
pub enum Failure<E, T = String> {
    Transient(T),
    Fatal(E),
}

/// How a request ended without a result.
#[derive(Debug)]
pub enum GaveUp<E, T = String> {
    Fatal(E),
    /// Every attempt failed transiently; `last` is the last failure.
    Exhausted {
        attempts: u32,
        last: T,
    },
}

/// A retry about to be made, for the caller's progress report.
#[derive(Debug, Clone, Copy)]
pub struct Retry<'a> {
    pub what: &'a str,
    /// The attempt that failed (1 for the first).
    pub attempt: u32,
    pub delay: Duration,
    pub error: &'a str,
}

/// How many attempts, and the pauses between them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    /// Attempts in all, the first included (at least one is made).
    pub attempts: u32,
    /// The pause after the first failure; it doubles after each further one.
    pub backoff: Duration,
    pub max_delay: Duration,
}

impl Policy {
    /// The pause after failed attempt `attempt` (1 for the first).
    pub fn delay(&self, attempt: u32) -> Duration {
        let doublings = attempt.saturating_sub(1).min(16);
        (self.backoff * 2u32.pow(doublings)).min(self.max_delay)
    }

    #[cfg(feature = "tokio")]
    /// After transient failure number `attempt`: false when that was the last attempt; else the
    /// retry is reported, the pause is waited out, and true.
    pub async fn pause(
        &self,
        what: &str,
        attempt: u32,
        error: &str,
        report: &(dyn Fn(Retry<'_>) + Sync),
    ) -> bool {
        if attempt >= self.attempts.max(1) {
            return false;
        }
        let delay = self.delay(attempt);
        report(Retry {
            what,
            attempt,
            delay,
            error,
        });
        tokio::time::sleep(delay).await;
        true
    }

    #[cfg(feature = "tokio")]
    /// Run `op` until it succeeds, fails fatally, or has failed `attempts` times; each retry is
    /// passed to `report` before its pause.
    pub async fn run<V, E, T, F, Fut>(
        &self,
        what: &str,
        report: &(dyn Fn(Retry<'_>) + Sync),
        mut op: F,
    ) -> Result<V, GaveUp<E, T>>
    where
        T: Display,
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<V, Failure<E, T>>>,
    {
        let mut attempt = 0;
        loop {
            attempt += 1;
            match op().await {
                Ok(v) => return Ok(v),
                Err(Failure::Fatal(e)) => return Err(GaveUp::Fatal(e)),
                Err(Failure::Transient(last)) => {
                    if !self.pause(what, attempt, &last.to_string(), report).await {
                        return Err(GaveUp::Exhausted {
                            attempts: attempt,
                            last,
                        });
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    const POLICY: Policy = Policy {
        attempts: 3,
        backoff: Duration::from_millis(1),
        max_delay: Duration::from_millis(3),
    };

    #[test]
    fn pauses_double_up_to_the_ceiling() {
        let ms = |a| POLICY.delay(a).as_millis();
        assert_eq!((ms(1), ms(2), ms(3), ms(40)), (1, 2, 3, 3));
    }

    #[cfg(feature = "tokio")]
    #[tokio::test]
    async fn transient_failures_are_retried_and_reported_fatal_ones_are_not() {
        let seen = Mutex::new(Vec::new());
        let report = |r: Retry<'_>| seen.lock().unwrap().push((r.attempt, r.error.to_string()));
        let mut calls = 0;
        let out: Result<u32, GaveUp<&str>> = POLICY
            .run("x", &report, || {
                calls += 1;
                let n = calls;
                async move {
                    if n < 3 {
                        Err(Failure::Transient(format!("reset {n}")))
                    } else {
                        Ok(n)
                    }
                }
            })
            .await;
        assert_eq!(out.unwrap(), 3);
        assert_eq!(
            *seen.lock().unwrap(),
            [(1, "reset 1".to_string()), (2, "reset 2".to_string())]
        );

        let mut calls = 0;
        let out: Result<(), GaveUp<&str>> = POLICY
            .run("x", &report, || {
                calls += 1;
                async { Err(Failure::Fatal("unauthorized")) }
            })
            .await;
        assert!(matches!(out, Err(GaveUp::Fatal("unauthorized"))));
        assert_eq!(calls, 1);

        let out: Result<(), GaveUp<&str>> = POLICY
            .run("x", &report, || async {
                Err(Failure::Transient("down".into()))
            })
            .await;
        match out {
            Err(GaveUp::Exhausted { attempts, last }) => {
                assert_eq!((attempts, &*last), (3, "down"))
            }
            other => panic!("{other:?}"),
        }
    }
}
