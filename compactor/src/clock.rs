//! The time the compactor's policies use (retention, grace periods, lease
//! expiry), injectable so tests can move it instead of sleeping.
//!
//! Block and commit ids keep using the real time: they order the commit log
//! that every process lists.

use std::fmt::Debug;
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A source of the current time.
pub trait Clock: Send + Sync + Debug {
    fn now(&self) -> SystemTime;

    /// Now in Unix nanoseconds.
    fn now_unix_nanos(&self) -> i64 {
        unix_nanos(self.now())
    }
}

/// The system's wall clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> SystemTime {
        SystemTime::now()
    }
}

/// A clock that moves only when told to (tests).
#[derive(Debug)]
pub struct ManualClock(Mutex<SystemTime>);

impl ManualClock {
    pub fn new(start: SystemTime) -> Self {
        Self(Mutex::new(start))
    }

    pub fn advance(&self, by: Duration) {
        *self.0.lock().expect("clock lock") += by;
    }

    /// Moves to `time`: a test that judges against real-time ids (a commit's
    /// id dates its retirements) sets the clock relative to them.
    pub fn set(&self, time: SystemTime) {
        *self.0.lock().expect("clock lock") = time;
    }
}

impl Clock for ManualClock {
    fn now(&self) -> SystemTime {
        *self.0.lock().expect("clock lock")
    }
}

/// `time` in Unix nanoseconds (0 before the epoch, saturating far after it).
pub fn unix_nanos(time: SystemTime) -> i64 {
    time.duration_since(UNIX_EPOCH).map(|d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX)).unwrap_or(0)
}
