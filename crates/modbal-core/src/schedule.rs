//! Epoch counts given on a paper's schedule, scaled to the run's length.
//!
//! A method's warm-up or modulation window is usually printed for the paper's own schedule
//! (ARM: warm-up 10 of the paper's epochs; OGM-GE: modulation in epochs 0-50 of 100; IBML: the
//! lr warm-up below epoch 35 of 100). Used literally in a 12-epoch run, such a warm-up would leave
//! the method active for 2 epochs or not at all. Methods therefore keep these values in the
//! paper's units together with the length of the schedule they refer to (`schedule_epochs`),
//! and convert them with [`scale_epoch`] to the run's `train.epochs` when the run starts:
//!
//! ```text
//! e_run = round(e_paper · run_epochs / schedule_epochs)      (half away from zero)
//! ```
//!
//! `schedule_epochs = 0` means "take the values literally" (no scaling). A run as long as the
//! paper's schedule uses the paper's numbers unchanged.

/// `e` epochs of a schedule of `schedule_epochs`, scaled to `run_epochs` (see the
/// [module docs](self)). `schedule_epochs == 0`: `e` unchanged.
pub fn scale_epoch(e: usize, schedule_epochs: usize, run_epochs: usize) -> usize {
    if schedule_epochs == 0 {
        return e;
    }
    // Integer round-half-up of e·run/schedule (exact, no float).
    (2 * e * run_epochs + schedule_epochs) / (2 * schedule_epochs)
}

#[cfg(test)]
mod tests {
    use super::scale_epoch;

    #[test]
    fn scales_to_the_run_and_keeps_literal_values() {
        // Closed forms: 10 of 100 → 1.2 of 12 → 1; 50 of 100 → 6 of 12; 35 of 100 → 4.2 → 4.
        assert_eq!(scale_epoch(10, 100, 12), 1);
        assert_eq!(scale_epoch(50, 100, 12), 6);
        assert_eq!(scale_epoch(35, 100, 12), 4);
        // Half rounds up: 25 of 100 in 10 epochs = 2.5 → 3.
        assert_eq!(scale_epoch(25, 100, 10), 3);
        // Same length: unchanged; 0 = literal.
        assert_eq!(scale_epoch(10, 30, 30), 10);
        assert_eq!(scale_epoch(10, 0, 12), 10);
        assert_eq!(scale_epoch(0, 100, 12), 0);
        // A window end at the schedule's end maps to the run's end.
        assert_eq!(scale_epoch(100, 100, 12), 12);
    }
}
