//! [`ModulationWindow`]: the epochs during which a modulator is active, shared by every config
//! that has a schedule (one struct instead of `modulation_starts`/`modulation_ends` repeated in
//! each method).
//!
//! Windows given on a paper's schedule (OGM-GE: epochs 0-50 of 100) are converted to the run's
//! length with [`ModulationWindow::scaled`], i.e. [`modbal_core::scale_epoch`] on both ends.

use crate::error::{param_err, Result};
use modbal_core::scale_epoch;
use serde::{Deserialize, Serialize};

/// The half-open range of 0-based epochs `[start, end)` during which a modulator acts:
/// epoch `e` is inside iff `start <= e < end`. `start == end` is an empty window (never active).
///
/// The official codes write their windows with other conventions; the equivalent half-open
/// windows are:
///
/// | code | condition | `ModulationWindow` |
/// |---|---|---|
/// | OGM-GE, BalanceMM | `starts <= epoch <= ends` (0, 50) | `{ start: 0, end: 51 }` |
/// | IBML | `starts < epoch < ends` (0, 90) | `{ start: 1, end: 90 }` |
/// | PMR | `starts <= epoch <= ends` (0, 100) | `{ start: 0, end: 101 }` |
///
/// These are epochs of the official schedules (100 epochs for OGM-GE and IBML, 150 for PMR);
/// a method scales them to the run with [`ModulationWindow::scaled`].
///
/// ```toml
/// [method.window]
/// start = 0
/// end = 51
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModulationWindow {
    /// First active epoch (inclusive, 0-based).
    pub start: usize,
    /// First epoch after the window (exclusive).
    pub end: usize,
}

impl ModulationWindow {
    /// A checked window: errors if `start > end`.
    pub fn new(start: usize, end: usize) -> Result<Self> {
        let w = Self { start, end };
        w.validate()?;
        Ok(w)
    }

    /// Errors if `start > end`.
    pub fn validate(&self) -> Result<()> {
        if self.start > self.end {
            return param_err(format!(
                "modulation window start {} is after its end {} (the window is [start, end))",
                self.start, self.end
            ));
        }
        Ok(())
    }

    /// Whether the 0-based `epoch` lies in `[start, end)`.
    pub fn contains(&self, epoch: usize) -> bool {
        self.start <= epoch && epoch < self.end
    }

    /// Number of epochs in the window.
    pub fn len(&self) -> usize {
        self.end.saturating_sub(self.start)
    }

    /// Whether the window contains no epoch.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The window of a schedule of `schedule_epochs` epochs, scaled to a run of `run_epochs`:
    /// both ends through [`modbal_core::scale_epoch`] (`round(e · run / schedule)`, half up), so
    /// the window covers the same share of the run. `schedule_epochs = 0` returns the window
    /// unchanged (literal epochs). Rounding keeps `start <= end` (scaling is monotone).
    ///
    /// ```
    /// use modbal_modulate::ModulationWindow;
    /// // OGM-GE's official window, epochs 0..=50 of 100, in a 12-epoch run: 51·12/100 = 6.12.
    /// let w = ModulationWindow { start: 0, end: 51 }.scaled(100, 12);
    /// assert_eq!(w, ModulationWindow { start: 0, end: 6 });
    /// assert_eq!(ModulationWindow { start: 0, end: 51 }.scaled(0, 12).end, 51);
    /// ```
    pub fn scaled(&self, schedule_epochs: usize, run_epochs: usize) -> Self {
        Self {
            start: scale_epoch(self.start, schedule_epochs, run_epochs),
            end: scale_epoch(self.end, schedule_epochs, run_epochs),
        }
    }
}
