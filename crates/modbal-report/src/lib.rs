//! Reports over modbal run directories (`modbal report`). Work in progress.
