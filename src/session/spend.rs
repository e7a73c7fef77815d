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

    /// Adds a turn's cost to `day`'s total (a new day starts from 0); the new total,
    /// once it is on disk. `counted` has it as soon as it is counted, before the
    /// write (an fsynced file: a millisecond, more on a busy disk), so a turn's result
    /// need not wait for the disk: no other process reads a total without it, since
    /// the file stays locked until it is written.
    pub fn add(
        &self,
        day: &str,
        cost_usd: f64,
        counted: impl FnOnce(&Today),
    ) -> Result<Today, StoreError> {
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
                counted(today);
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

    /// `spend.add`, checking that the total it tells before the write is the one
    /// written.
    fn add(spend: &Spend, day: &str, cost: f64) -> Today {
        let mut told = None;
        let written = spend.add(day, cost, |t| told = Some(t.clone())).unwrap();
        assert_eq!(told, Some(written.clone()));
        written
    }

    #[test]
    fn the_total_is_told_before_the_disk_has_it_and_the_file_is_locked_meanwhile() {
        let dir = tempfile::tempdir().unwrap();
        let paths = Paths::under(dir.path());
        std::fs::create_dir_all(paths.state_dir()).unwrap();
        let spend = Spend::new(&paths);
        add(&spend, "2026-12-02", 0.25);
        let lock = paths.lock_file("spend");
        let counted = |today: &Today| {
            assert_eq!(today.cost_usd, 0.75);
            // Not written yet: a result need not wait for the disk.
            assert_eq!(spend.on("2026-12-02").cost_usd, 0.25);
            // And nobody else can change it meanwhile (so nobody counts without it).
            let file = std::fs::File::options().write(true).open(&lock).unwrap();
            let mut other = fd_lock::RwLock::new(file);
            assert!(other.try_write().is_err(), "the spend file is not locked");
        };
        spend.add("2026-12-02", 0.5, counted).unwrap();
        assert_eq!(spend.on("2026-12-02").cost_usd, 0.75);
    }

    #[test]
    fn turns_add_up_per_day_across_instances_and_a_new_day_starts_at_zero() {
        let dir = tempfile::tempdir().unwrap();
        let paths = Paths::under(dir.path());
        std::fs::create_dir_all(paths.state_dir()).unwrap();
        let (a, b) = (Spend::new(&paths), Spend::new(&paths));
        add(&a, "2026-12-02", 0.25);
        // Another worker of the same home (a deploy's handover) adds to the same day.
        let total = add(&b, "2026-12-02", 0.5);
        assert_eq!(total.cost_usd, 0.75);
        assert_eq!(a.on("2026-12-02").cost_usd, 0.75);
        // What is not a cost adds nothing.
        for bad in [f64::NAN, -1.0, f64::INFINITY] {
            assert_eq!(add(&a, "2026-12-02", bad).cost_usd, 0.75);
        }
        // The next day starts from nothing; asking about a day not kept says 0.
        assert_eq!(add(&a, "2026-12-03", 0.1).cost_usd, 0.1);
        assert_eq!(a.on("2026-12-02").cost_usd, 0.0);
        // A damaged file counts from 0 and is replaced by the next turn.
        std::fs::write(paths.state_dir().join("spend.json"), "{not json").unwrap();
        assert_eq!(a.on("2026-12-03").cost_usd, 0.0);
        assert_eq!(add(&a, "2026-12-03", 0.2).cost_usd, 0.2);
    }
}
