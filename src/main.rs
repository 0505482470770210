use clap::Parser;

fn main() {
    let cli = xnat::cli::Cli::parse();
    std::process::exit(xnat::app::main(cli));
}
