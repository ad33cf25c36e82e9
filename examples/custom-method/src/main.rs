//! `custom-method`: the `modbal` command line with `aux-ce`, `quadrants` and `tanh-mlp` added.
//!
//! ```sh
//! custom-method train --dataset quadrants --method aux-ce --epochs 8
//! ```

fn main() {
    modbal::cli::main(custom_method::registry());
}
