//! Sweeps: a grid of runs (methods × seeds × datasets × presets × `--set` values), run by local
//! parallel jobs or as a Slurm job array. Work in progress.
