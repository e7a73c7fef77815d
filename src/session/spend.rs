//! What Claude Code has cost today, over every session: the sum of the turns' costs,
//! per local calendar day, kept in the state directory (`spend.json`) so a worker's
//! restart or a deploy does not start the day again. Changed under the inter-process
//! lock: during a deploy's handover two workers may both end turns.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::store::{modify_json, read_json, Paths, StoreError};

/// The day's total, as the file keeps it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Today {
    /// The local date, `2026-12-02`.
    pub day: String,
    /// US dollars.
    pub cost_usd: f64,
}

impl Today {
    /// Nothing spent yet on `day`.
    pub fn none(day: &str) -> Self {
        Self {
            day: day.to_owned(),
            cost_usd: 0.0,
        }
    }

    /// What every phone is told of it.
    pub fn message(self) -> crate::protocol::ServerMsg {
        crate::protocol::ServerMsg::TodayCost {
            day: self.day,
            cost_usd: self.cost_usd,
        }
    }
}

/// The spend file of a Chroxy home.
#[derive(Debug, Clone)]
pub struct Spend {
    file: PathBuf,
    lock: PathBuf,
}

impl Spend {
    /// The spend of this Chroxy home.
    pub fn new(paths: &Paths) -> Self {
        Self {
            file: paths.state_dir().join("spend.json"),
            lock: paths.lock_file("spend"),
        }
    }

    /// Adds a turn's cost to `day`'s total (a new day starts from 0); the new total.
    pub fn add(&self, day: &str, cost_usd: f64) -> Result<Today, StoreError> {
        modify_json(
            &self.file,
            &self.lock,
            || Ok(self.load()),
            |today: &mut Today| {
                if today.day != day {
                    *today = Today::none(day);
                }
                if cost_usd.is_finite() && cost_usd > 0.0 {
                    today.cost_usd += cost_usd;
                }
                Ok(today.clone())
            },
        )
    }

    /// `day`'s total so far.
    pub fn on(&self, day: &str) -> Today {
        let today = self.load();
        if today.day == day {
            today
        } else {
            Today::none(day)
        }
    }

    /// A file that cannot be read or parsed counts as nothing spent yet: a figure for
    /// the person, never a reason to refuse a turn.
    fn load(&self) -> Today {
        match read_json::<Today>(&self.file) {
            Ok(Ok(today)) => today,
            Ok(Err(err)) => {
                tracing::warn!(%err, file = %self.file.display(), "the day's spend is unreadable; counting from 0");
                Today::default()
            }
            Err(err) => {
                tracing::warn!(%err, "the day's spend cannot be read; counting from 0");
                Today::default()
            }
        }
    }
}

/// Today's local date, as [`Spend`] keys it.
pub fn local_day() -> String {
    chrono::Local::now().format("%Y-%m-%d").to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn turns_add_up_per_day_across_instances_and_a_new_day_starts_at_zero() {
        let dir = tempfile::tempdir().unwrap();
        let paths = Paths::under(dir.path());
        std::fs::create_dir_all(paths.state_dir()).unwrap();
        let (a, b) = (Spend::new(&paths), Spend::new(&paths));
        a.add("2026-12-02", 0.25).unwrap();
        // Another worker of the same home (a deploy's handover) adds to the same day.
        let total = b.add("2026-12-02", 0.5).unwrap();
        assert_eq!(total.cost_usd, 0.75);
        assert_eq!(a.on("2026-12-02").cost_usd, 0.75);
        // What is not a cost adds nothing.
        for bad in [f64::NAN, -1.0, f64::INFINITY] {
            assert_eq!(a.add("2026-12-02", bad).unwrap().cost_usd, 0.75);
        }
        // The next day starts from nothing; asking about a day not kept says 0.
        assert_eq!(a.add("2026-12-03", 0.1).unwrap().cost_usd, 0.1);
        assert_eq!(a.on("2026-12-02").cost_usd, 0.0);
        // A damaged file counts from 0 and is replaced by the next turn.
        std::fs::write(paths.state_dir().join("spend.json"), "{not json").unwrap();
        assert_eq!(a.on("2026-12-03").cost_usd, 0.0);
        assert_eq!(a.add("2026-12-03", 0.2).unwrap().cost_usd, 0.2);
    }
}
