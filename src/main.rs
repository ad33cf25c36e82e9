//! `modbal`: the command-line interface ([`modbal::cli`] with the built-in names).

fn main() {
    modbal::cli::main(modbal::Registry::builtin());
}
